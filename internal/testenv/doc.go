// Package testenv starts real programs for tests (redis-server, nginx,
// Chromium, and the project's own commands) on 127.0.0.1, and stops them
// again when the test ends.
//
// Start with [StartProcess] for any binary, [Redis] or [Nginx] for the
// servers, [RedisCluster] for a Redis Cluster of six nodes (with [Cluster]'s
// helpers to find a slot's master, kill it and wait for the failover),
// [Build] to compile one of the project's commands, and [FreePort] to pick
// a port. [RedisCommand] sends a command to a Redis server without a client
// library. Every helper registers its own cleanup with t.Cleanup and
// stops what it started by PID, so a test needs no teardown code.
//
// A missing system program skips the test when the environment variable CI
// is unset (a developer without nginx still gets the rest of the suite) and
// fails it when CI is set, so CI cannot pass by skipping. scripts/setup
// installs everything.
//
// Helpers that take a testing.TB call t.Fatal on failure and so must be
// called from the test's own goroutine.
package testenv
