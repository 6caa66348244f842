package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// inspectorURL waits for the client's "inspector" log line and returns the
// URL it gives.
func inspectorURL(t *testing.T, c *testenv.Process) string {
	t.Helper()
	line := cmdtest.WaitStderr(t, c, 20*time.Second, "msg=inspector", "url=")
	m := regexp.MustCompile(`url=(http://\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no URL in %q", line)
	}
	return m[1]
}

func apiGet(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
}

func TestInspectorOnByDefaultPort(t *testing.T) {
	local := origin(t)
	px := cmdtest.StartProxy(t, 0)
	// The port asked for is taken: the client moves to a later one, as
	// ngrok does, and says so.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	c := cmdtest.StartClient(t, px.Addr, filepath.Join(t.TempDir(), "client.jwk"), local.URL,
		"--inspect", "127.0.0.1:"+strconv.Itoa(port))
	public := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)
	insp := inspectorURL(t, c)
	got, _ := strconv.Atoi(insp[strings.LastIndexByte(insp, ':')+1:])
	if got <= port || got >= port+10 {
		t.Fatalf("inspector at %s; want a port among the 9 after the taken %d", insp, port)
	}
	cmdtest.WaitStderr(t, c, time.Second, "msg=inspector", "port "+strconv.Itoa(port)+" is in use")

	// The script ngrok users have, unchanged but for the port.
	if _, err := exec.LookPath("jq"); err == nil {
		if _, err := exec.LookPath("curl"); err == nil {
			out, err := exec.Command("sh", "-c", "curl -s "+strings.TrimPrefix(insp, "http://")+"/api/tunnels | jq -r '.tunnels[0].public_url'").Output()
			if err != nil || strings.TrimSpace(string(out)) != public {
				t.Errorf("curl | jq printed %q (%v), want %s", out, err, public)
			}
		}
	}
	var tunnels struct {
		Tunnels []struct {
			PublicURL string `json:"public_url"`
			Config    struct{ Addr string }
		}
	}
	apiGet(t, insp+"/api/tunnels", &tunnels)
	if len(tunnels.Tunnels) != 1 || tunnels.Tunnels[0].PublicURL != public || tunnels.Tunnels[0].Config.Addr != local.URL {
		t.Errorf("tunnels %+v, want %s forwarding to %s", tunnels, public, local.URL)
	}

	// One ID in the client's log line and in the inspector.
	if status, _ := cmdtest.Do(t, px.Addr, "POST", public, "/orders", `{"n":1}`); status != 200 {
		t.Fatalf("POST through the tunnel: %d", status)
	}
	line := cmdtest.WaitStderr(t, c, 5*time.Second, "msg=request", "path=/orders")
	m := regexp.MustCompile(`req=([0-9a-f]{32}) `).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("request line %q has no req=<32 hex digits>", line)
	}
	var one struct {
		ID      string
		Request struct{ Method, URI string }
	}
	apiGet(t, insp+"/api/requests/http/"+m[1], &one)
	if one.ID != m[1] || one.Request.Method != "POST" || one.Request.URI != "/orders" {
		t.Errorf("the inspector's request %s: %+v", m[1], one)
	}
}

func TestInspectorOffAndCaptureOff(t *testing.T) {
	local := origin(t)
	px := cmdtest.StartProxy(t, 0)
	key := filepath.Join(t.TempDir(), "client.jwk")

	free := testenv.FreePort(t)
	off := cmdtest.StartClient(t, px.Addr, key, local.URL, "--inspect", "off", "--log-level", "debug")
	public := cmdtest.WaitURL(t, off, px.Port, 1, 20*time.Second)
	if strings.Contains(off.Stderr(), "inspector") {
		t.Errorf("--inspect off still mentions an inspector:\n%s", off.Stderr())
	}
	if status, _ := cmdtest.Do(t, px.Addr, "GET", public, "/x", ""); status != 200 {
		t.Fatalf("GET through the tunnel without the inspector: %d", status)
	}

	// --inspect-buffer 0: the API and the status work, nothing is kept.
	c := cmdtest.StartClient(t, px.Addr, filepath.Join(t.TempDir(), "client2.jwk"), local.URL,
		"--inspect", "127.0.0.1:"+strconv.Itoa(free), "--inspect-buffer", "0")
	public2 := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)
	insp := inspectorURL(t, c)
	if status, _ := cmdtest.Do(t, px.Addr, "GET", public2, "/y", ""); status != 200 {
		t.Fatalf("GET through the tunnel: %d", status)
	}
	cmdtest.WaitStderr(t, c, 5*time.Second, "msg=request", "path=/y")
	var list struct{ Requests []any }
	apiGet(t, insp+"/api/requests/http", &list)
	if len(list.Requests) != 0 {
		t.Errorf("%d requests kept with --inspect-buffer 0", len(list.Requests))
	}
	var status struct {
		PublicURL string `json:"public_url"`
		Capture   struct{ On bool }
		Metrics   struct{ HTTP struct{ Count int } }
	}
	apiGet(t, insp+"/api/status", &status)
	if status.PublicURL != public2 || status.Capture.On || status.Metrics.HTTP.Count != 1 {
		t.Errorf("status %+v, want %s, capture off, 1 request counted", status, public2)
	}
}
