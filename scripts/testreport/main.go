// Command testreport runs `go test -json` and prints what plain `go test`
// would (each package's result line, and the whole output of every failing
// test and package), keeps the JSON stream in a file (-json), and counts the
// tests that were skipped; -summary reads such files and lists every
// skipped test and why, so that a green run cannot hide that it was
// partial. Its exit status is the test command's.
//
//	go run ./scripts/testreport [-v] [-json FILE] -- go test -json [flags] [packages]
//	go run ./scripts/testreport -summary FILE...
//
// With -v every output line is printed as it comes, as with go test -v.
// -summary reads JSON files written by earlier runs and prints their skipped
// tests only; it fails when a file records a failure.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// event is one line of go test -json (cmd/test2json).
type event struct {
	Time        time.Time `json:",omitempty"`
	Action      string
	Package     string  `json:",omitempty"`
	ImportPath  string  `json:",omitempty"`
	Test        string  `json:",omitempty"`
	Elapsed     float64 `json:",omitempty"`
	Output      string  `json:",omitempty"`
	FailedBuild string  `json:",omitempty"`
}

type key struct{ pkg, test string }

// report follows the events of one or more runs.
type report struct {
	out     io.Writer
	verbose bool
	// output holds each running test's and package's lines until it ends.
	output map[key][]string
	// skipped, failed and passed are the tests that ended so, in order.
	skipped        []skip
	failed         []key
	failedPackages []string
	passed         int
	// ran holds the tests that passed, so that a test one run skipped and a
	// later run ran (the soak test) is not listed as skipped.
	ran    map[key]bool
	module string
}

type skip struct {
	key
	reason string
}

func newReport(out io.Writer, verbose bool) *report {
	return &report{out: out, verbose: verbose, output: map[key][]string{}, ran: map[key]bool{}, module: modulePath()}
}

// modulePath is the module's path, to shorten package names.
func modulePath() string {
	b, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (r *report) short(pkg string) string {
	if rel, ok := strings.CutPrefix(pkg, r.module); ok && r.module != "" {
		return "." + rel
	}
	return pkg
}

// line handles one line of the stream; a line that is not an event is
// printed as it is.
func (r *report) line(b []byte) {
	var ev event
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &ev) != nil || ev.Action == "" {
		fmt.Fprintf(r.out, "%s\n", b)
		return
	}
	r.event(ev)
}

func (r *report) event(ev event) {
	k := key{ev.Package, ev.Test}
	switch ev.Action {
	case "build-output":
		fmt.Fprint(r.out, ev.Output)
	case "output":
		if r.verbose {
			fmt.Fprint(r.out, ev.Output)
		}
		if ev.Test != "" && strings.HasPrefix(ev.Output, "=== ") {
			// go test prints these with -v only.
			return
		}
		r.output[k] = append(r.output[k], ev.Output)
	case "skip":
		if ev.Test != "" {
			r.skipped = append(r.skipped, skip{k, skipReason(r.output[k])})
		} else {
			r.packageDone(ev, false)
		}
		delete(r.output, k)
	case "pass":
		if ev.Test != "" {
			r.passed++
			r.ran[k] = true
		} else {
			r.packageDone(ev, false)
		}
		delete(r.output, k)
	case "fail":
		if ev.Test != "" {
			r.failed = append(r.failed, k)
			if !r.verbose {
				// Printed at once, not at the end of the package.
				fmt.Fprint(r.out, strings.Join(r.output[k], ""))
			}
		} else {
			r.failedPackages = append(r.failedPackages, ev.Package)
			r.unfinished(ev.Package)
			r.packageDone(ev, true)
		}
		delete(r.output, k)
	}
}

// unfinished reports the tests of a failed package that never ended (a
// panic, a timeout, a crash): their output holds what went wrong.
func (r *report) unfinished(pkg string) {
	var keys []key
	for k := range r.output {
		if k.pkg == pkg && k.test != "" {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b key) int { return strings.Compare(a.test, b.test) })
	for _, k := range keys {
		r.failed = append(r.failed, k)
		if !r.verbose {
			fmt.Fprint(r.out, strings.Join(r.output[k], ""))
		}
		delete(r.output, k)
	}
}

// packageDone prints what go test prints for a finished package: its result
// line, and everything it printed outside its tests when it failed.
func (r *report) packageDone(ev event, failed bool) {
	lines := r.output[key{ev.Package, ""}]
	if r.verbose {
		return
	}
	if failed {
		fmt.Fprint(r.out, strings.Join(lines, ""))
		if len(lines) == 0 && ev.FailedBuild != "" {
			fmt.Fprintf(r.out, "FAIL\t%s [build failed]\n", ev.Package)
		}
		return
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "ok  \t") || strings.HasPrefix(l, "?   \t") {
			fmt.Fprint(r.out, l)
		}
	}
}

// skipReason is what a skipped test logged, without the framework's lines.
func skipReason(lines []string) string {
	var msgs []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		msgs = append(msgs, t)
	}
	if len(msgs) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msgs, " / ")
}

// summary lists the skipped tests, then the failed ones.
func (r *report) summary() {
	var skipped []skip
	var ranLater []string
	for _, s := range r.skipped {
		if r.ran[s.key] {
			ranLater = append(ranLater, s.test)
		} else {
			skipped = append(skipped, s)
		}
	}
	fmt.Fprintf(r.out, "\n%s passed, %d failed, %d skipped\n", tests(r.passed), len(r.failed), len(skipped))
	if len(ranLater) > 0 {
		fmt.Fprintf(r.out, "skipped in one run and passed in another: %s\n", strings.Join(ranLater, ", "))
	}
	if len(skipped) > 0 {
		fmt.Fprintf(r.out, "skipped tests (%d):\n", len(skipped))
		w := tabwriter.NewWriter(r.out, 0, 0, 2, ' ', 0)
		for _, s := range skipped {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", r.short(s.pkg), s.test, s.reason)
		}
		w.Flush()
	} else {
		fmt.Fprintln(r.out, "no test was skipped")
	}
	if len(r.failed) > 0 || len(r.failedPackages) > 0 {
		fmt.Fprintln(r.out, "failed:")
		for _, k := range r.failed {
			fmt.Fprintf(r.out, "  %s\t%s\n", r.short(k.pkg), k.test)
		}
		for _, p := range r.failedPackages {
			if !slices.ContainsFunc(r.failed, func(k key) bool { return k.pkg == p }) {
				fmt.Fprintf(r.out, "  %s\t(the package failed outside its tests)\n", r.short(p))
			}
		}
	}
}

func tests(n int) string {
	if n == 1 {
		return "1 test"
	}
	return fmt.Sprintf("%d tests", n)
}

func (r *report) ok() bool { return len(r.failed) == 0 && len(r.failedPackages) == 0 }

func main() {
	verbose := flag.Bool("v", false, "print every output line as it comes, as go test -v does")
	jsonOut := flag.String("json", "", "also write the JSON stream to this file")
	summary := flag.Bool("summary", false, "print the skipped tests recorded in the JSON files named as arguments")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: testreport [-v] [-json FILE] -- go test -json [flags] [packages]\n       testreport -summary FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *summary {
		os.Exit(summarize(flag.Args()))
	}
	os.Exit(run(flag.Args(), *verbose, *jsonOut))
}

// run runs the test command, following its JSON output, and returns the
// exit status to end with.
func run(args []string, verbose bool, jsonOut string) int {
	var record io.Writer = io.Discard
	if jsonOut != "" {
		if err := os.MkdirAll(filepath.Dir(jsonOut), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			return 1
		}
		f, err := os.Create(jsonOut)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			return 1
		}
		defer f.Close()
		record = f
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		return 1
	}
	// An interrupt reaches the test command too (same process group); it
	// ends, and then so does this.
	signal.Notify(make(chan os.Signal, 1), os.Interrupt)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		return 1
	}
	r := newReport(os.Stdout, verbose)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		fmt.Fprintf(record, "%s\n", sc.Bytes())
		r.line(sc.Bytes())
	}
	scanErr := sc.Err()
	if scanErr != nil {
		// Keep the pipe drained so that the test command can finish.
		_, _ = io.Copy(io.Discard, stdout)
	}
	waitErr := cmd.Wait()
	if !r.ok() {
		// The run stops here: list what it skipped as well.
		r.summary()
	} else {
		fmt.Fprintf(r.out, "\n%s passed, %d skipped (listed at the end)\n", tests(r.passed), len(r.skipped))
	}
	switch {
	case scanErr != nil:
		fmt.Fprintln(os.Stderr, "testreport: reading the test output:", scanErr)
		return 1
	case waitErr != nil:
		var exit *exec.ExitError
		if errors.As(waitErr, &exit) && exit.ExitCode() > 0 {
			return exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "testreport:", waitErr)
		return 1
	case !r.ok():
		return 1
	}
	return 0
}

// summarize prints the skipped tests of earlier runs.
func summarize(files []string) int {
	r := newReport(io.Discard, false)
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			return 1
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			r.line(sc.Bytes())
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "testreport: %s: %v\n", name, err)
			return 1
		}
	}
	r.out = os.Stdout
	r.summary()
	if !r.ok() {
		return 1
	}
	return 0
}
