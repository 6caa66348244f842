// Package cli holds what the keyhole commands share: environment
// fallbacks for flags, usage text and logger setup.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
)

// EnvName is the environment variable that supplies flag name:
// KEYHOLE_ and the name in upper case with dashes as underscores.
func EnvName(name string) string {
	return "KEYHOLE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse applies environment fallbacks, then the command line, to fs.
// Flags given on the command line win over the environment.
//
// Parse prints nothing: fs's own output and usage are silenced. A bad flag
// comes back as an error whose text is one line, for the caller to print
// with a pointer to --help rather than the whole usage; -h and --help come
// back as flag.ErrHelp, and the caller prints [PrintUsage] to stdout.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("invalid value %q for %s: %v", v, EnvName(f.Name), e)
			}
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
}

// PrintUsage writes a synopsis, every flag of fs with its environment
// variable, and a footer to w.
func PrintUsage(w io.Writer, fs *flag.FlagSet, synopsis, footer string) {
	fmt.Fprintf(w, "%s\n\nFlags (each may also be set with the environment variable shown):\n", synopsis)
	printFlags(w, fs, true)
	if footer != "" {
		fmt.Fprintf(w, "\n%s\n", footer)
	}
}

// PrintSubUsage writes a synopsis and every flag of fs to w, for a
// subcommand whose flags have no environment variables.
func PrintSubUsage(w io.Writer, fs *flag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "%s\n\nFlags:\n", synopsis)
	printFlags(w, fs, false)
}

// printFlags writes each flag of fs with its usage, its default unless that
// is a zero value, and with env its environment variable.
func printFlags(w io.Writer, fs *flag.FlagSet, env bool) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "false", "0", "[]", "0B", "0s":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		if env {
			fmt.Fprintf(w, "\n    \t[%s]", EnvName(f.Name))
		}
		fmt.Fprintln(w)
	})
}

// Logger returns a text logger on w at the named level.
func Logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// UsageError is a problem with the command line or the environment; Main
// exits 2 for it, and 1 for any other error.
type UsageError struct{ error }

// Usage wraps err as a UsageError.
func Usage(err error) error { return UsageError{err} }

// Unwrap returns the wrapped error.
func (e UsageError) Unwrap() error { return e.error }

// RunFunc is a command's body: flags and environment in, an error out.
type RunFunc func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Main runs a command until SIGINT or SIGTERM, prints its error as one
// line prefixed with name, and exits: 0 on success or --help, 2 for a
// UsageError, 1 otherwise. Only main should call it.
func Main(name string, run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(UsageError)):
		fmt.Fprintf(os.Stderr, "%s: %v (see %s --help)\n", name, err, name)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// StartCPUProfile writes a CPU profile to path until the returned function
// is called, for the commands' --cpuprofile flag.
func StartCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// List is a flag that may be given more than once, each time adding
// values: a flag's value is split at commas, so that an environment
// variable can hold several ("KEYHOLE_NAME=docs,app"). Empty parts are
// ignored.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *List) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// Lines is a flag like [List] for values that may hold commas, such as
// passwords: a value is split only at line breaks, so an environment
// variable holds several one per line. Empty lines are ignored; nothing
// else is trimmed.
type Lines []string

func (l *Lines) String() string { return strings.Join(*l, "\n") }

// Set implements flag.Value.
func (l *Lines) Set(v string) error {
	for part := range strings.Lines(v) {
		if part = strings.TrimRight(part, "\r\n"); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}
