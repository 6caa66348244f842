// Package cli holds what the keyhole commands share: environment
// fallbacks for flags, usage text and logger setup.
package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
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
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "\n    \t[%s]\n", EnvName(f.Name))
	})
	if footer != "" {
		fmt.Fprintf(w, "\n%s\n", footer)
	}
}

// Logger returns a text logger on w at the named level.
func Logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
