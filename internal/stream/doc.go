// Package stream is keyhole's one implementation of a stream, shared by
// the proxy and the client: an HTTP exchange or a WebSocket multiplexed on
// the client connection by its ID, with credit-based flow control.
//
// A [Stream] is one endpoint: what arrived from the peer waits in a
// receive queue bounded by the window this side granted, and credit is
// returned as the caller consumes it ([Stream.Consumed]), never merely as
// it arrives; sending waits for the peer's credit ([Stream.Reserve]).
// Windows start at messages.InitialWindow and grow for streams whose
// sender runs out of credit while the consumer keeps up, within a
// [Budget]. [SendBody] and [BodyReader] move HTTP bodies; [PumpWebSocket]
// carries a WebSocket, on either side.
//
// A [Writer] is one connection's outgoing side: control frames first, then
// the streams' data frames in turns of one frame each, within the
// connection's credit. [ConnWindow] is the connection's receiving side.
package stream
