package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// NginxServer is an nginx started by [Nginx].
type NginxServer struct {
	// Addr is "127.0.0.1:PORT", the port passed to Nginx.
	Addr string
	// Dir is the nginx prefix directory; nginx.conf, logs/ and tmp/ are in
	// it. Relative paths in the configuration resolve against it.
	Dir string

	proc *Process
}

var (
	userDirective = regexp.MustCompile(`(?m)^\s*user\s`)
	pidDirective  = regexp.MustCompile(`(?m)^\s*pid\s`)
	httpBlock     = regexp.MustCompile(`(?m)^\s*http\s*\{`)
)

// Nginx writes conf as the main nginx configuration into a fresh prefix
// directory, starts nginx in the foreground with it, and waits until
// 127.0.0.1:port accepts connections. conf must listen on that port (the
// caller picks it, usually with [FreePort], because it also appears in the
// configuration). Cleanup stops nginx.
//
// So that several test servers can run at once, Nginx adds to conf, unless
// conf already sets them:
//   - a pid file inside the prefix (the packaged default is shared);
//   - when running as root, "user root;", because workers running as nobody
//     cannot enter a test's private temporary directory;
//   - right after the first "http {", the client body and proxy (and
//     fastcgi, uwsgi, scgi) temp paths inside the prefix.
//
// Errors go to stderr (-e stderr), which the test log shows on failure.
func Nginx(t testing.TB, conf string, port int) *NginxServer {
	t.Helper()
	bin := lookBinary(t, "nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{filepath.Join(dir, "logs"), tmp} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatalf("testenv: nginx: %v", err)
		}
		// World-writable, for workers that run as another user when conf
		// sets its own user directive.
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatalf("testenv: nginx: %v", err)
		}
	}

	var head strings.Builder
	if !pidDirective.MatchString(conf) {
		fmt.Fprintf(&head, "pid %s;\n", filepath.Join(dir, "nginx.pid"))
	}
	if os.Geteuid() == 0 && !userDirective.MatchString(conf) {
		head.WriteString("user root;\n")
	}
	if loc := httpBlock.FindStringIndex(conf); loc != nil && !strings.Contains(conf, "client_body_temp_path") {
		var temps strings.Builder
		temps.WriteString("\n")
		for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			fmt.Fprintf(&temps, "    %s_temp_path %s;\n", kind, filepath.Join(tmp, kind))
		}
		conf = conf[:loc[1]] + temps.String() + conf[loc[1]:]
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(head.String()+conf), 0o644); err != nil {
		t.Fatalf("testenv: nginx: %v", err)
	}

	s := &NginxServer{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:  dir,
	}
	p, err := startProcess(t, bin, []string{"-p", dir, "-c", confPath, "-e", "stderr", "-g", "daemon off;"}, nil)
	if err != nil {
		t.Fatalf("testenv: nginx: %v", err)
	}
	s.proc = p
	ready := func(ctx context.Context) bool {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.Addr)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
	if err := waitReady(p, ready); err != nil {
		t.Fatalf("testenv: nginx on %s: %v\n%s", s.Addr, err, tail(p.Stderr(), 4096))
	}
	return s
}

// Stop stops nginx (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (s *NginxServer) Stop() { s.proc.stop(stopGrace) }

// Process returns the nginx master process, for signals such as SIGHUP
// (reload).
func (s *NginxServer) Process() *Process { return s.proc }
