package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrkLoader runs loads with wrk. Plain GETs to one host use -H; POST
// bodies and several hosts use a Lua script written to dir.
type wrkLoader struct {
	bin     string
	version string
	dir     string
	scripts int
}

func newWrkLoader(dir string) (*wrkLoader, error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		return nil, err
	}
	w := &wrkLoader{bin: bin, dir: dir, version: "wrk"}
	// "wrk -v" prints its version and usage, and exits 1.
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	if f := strings.Fields(string(out)); len(f) >= 2 && f[0] == "wrk" {
		w.version = "wrk " + f[1]
	}
	return w, nil
}

func (w *wrkLoader) name() string { return w.version }

func (w *wrkLoader) run(ctx context.Context, l httpLoad) (*loadResult, error) {
	secs := max(1, int(l.duration.Round(time.Second)/time.Second))
	args := []string{
		"-t", strconv.Itoa(min(2, l.concurrency)),
		"-c", strconv.Itoa(l.concurrency),
		"-d", strconv.Itoa(secs) + "s",
		"--timeout", strconv.Itoa(int(requestTimeout/time.Second)) + "s",
		"--latency",
	}
	if l.method != "GET" || len(l.hosts) > 1 || l.body != nil {
		script, err := w.script(l)
		if err != nil {
			return nil, err
		}
		args = append(args, "-s", script)
	} else if len(l.hosts) == 1 {
		args = append(args, "-H", "Host: "+l.hosts[0])
	}
	args = append(args, "http://"+l.addr+l.path)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+requestTimeout+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("wrk: %w", ctx.Err())
	}
	if err != nil {
		var stderr string
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = string(ee.Stderr)
		}
		return nil, fmt.Errorf("wrk %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return nil, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return r, nil
}

// script writes a Lua script for l: method, body and Host headers. With
// several hosts, each thread formats every request once in init and then
// cycles through them, so the script costs wrk almost nothing per request.
func (w *wrkLoader) script(l httpLoad) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "wrk.method = %q\n", l.method)
	if l.body != nil {
		b.WriteString("wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n")
		// The body is the origin's pattern, rebuilt in Lua rather than
		// quoted: a 400 KiB literal would be a 400 KiB script.
		if !isPattern(l.body) {
			return "", errors.New("wrk: only pattern bodies are supported")
		}
		fmt.Fprintf(&b, "local unit = \"abcdefghijklmnopqrstuvwxyz\"\n")
		fmt.Fprintf(&b, "wrk.body = (string.rep(unit, %d) .. unit):sub(1, %d)\n", len(l.body)/26, len(l.body))
	}
	switch len(l.hosts) {
	case 0:
	case 1:
		fmt.Fprintf(&b, "wrk.headers[\"Host\"] = %q\n", l.hosts[0])
	default:
		b.WriteString("local hosts = {\n")
		for _, h := range l.hosts {
			fmt.Fprintf(&b, "  %q,\n", h)
		}
		b.WriteString("}\n")
		b.WriteString(`local reqs = {}
local i = 0
init = function(args)
  for k, h in ipairs(hosts) do
    local headers = {}
    for name, v in pairs(wrk.headers) do headers[name] = v end
    headers["Host"] = h
    reqs[k] = wrk.format(nil, nil, headers)
  end
  i = math.random(#reqs)
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
`)
	}
	w.scripts++
	path := filepath.Join(w.dir, fmt.Sprintf("wrk-%d.lua", w.scripts))
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("wrk script: %w", err)
	}
	return path, nil
}

func isPattern(b []byte) bool {
	for i, c := range b {
		if c != 'a'+byte(i%26) {
			return false
		}
	}
	return true
}

// parseWrk reads the summary wrk prints with --latency.
func parseWrk(out string) (*loadResult, error) {
	r := &loadResult{}
	var haveP50, haveP99, haveReqs bool
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimSpace(line)
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "50%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return nil, err
			}
			r.p50, haveP50 = d, true
		case len(f) == 2 && f[0] == "99%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return nil, err
			}
			r.p99, haveP99 = d, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse %q: %w", line, err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return nil, err
			}
			r.ops, r.elapsed, haveReqs = n, d, true
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("parse %q: %w", line, err)
				}
				if n > 0 && r.firstErr == "" {
					r.firstErr = line
				}
				r.errors += n
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse %q: %w", line, err)
			}
			r.errors += n
			if r.firstErr == "" {
				r.firstErr = line
			}
		}
	}
	if !haveP50 || !haveP99 || !haveReqs {
		return nil, errors.New("no latency distribution or request count in wrk's output")
	}
	// Failed requests are in wrk's count; the rate counts answers.
	r.ops = max(0, r.ops-r.errors)
	return r, nil
}

// parseWrkDuration parses wrk's durations: 412.00us, 1.25ms, 2.00s, 1.00m.
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk duration %q: %w", s, err)
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q: unknown unit", s)
}
