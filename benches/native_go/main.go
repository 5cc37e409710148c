// Word count as a plain Go program: the baseline for the Go component (no Wasm, no engine, no
// framework). The same splitting, counting and output lines as
// guest-sdks/go/examples/word_count, over lines already in memory.
//
//	go build -o native_go . && ./native_go LINES.txt
//
// Prints one JSON object: lines, output lines and lines per second.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

const punctuation = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: native_go LINES.txt")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	started := time.Now()
	counts := map[string]int{}
	var out bytes.Buffer
	emitted := 0
	for _, line := range lines {
		for _, word := range strings.Split(strings.Trim(strings.ToLower(line), punctuation), " ") {
			word = strings.Trim(word, punctuation)
			counts[word]++
			out.WriteString(word)
			out.WriteString(" => ")
			out.WriteString(strconv.Itoa(counts[word]))
			out.WriteByte('\n')
			emitted++
		}
	}
	elapsed := time.Since(started).Seconds()
	fmt.Printf("{\"lines\": %d, \"emitted\": %d, \"bytes\": %d, \"lines_per_s\": %.0f}\n",
		len(lines), emitted, out.Len(), float64(len(lines))/elapsed)
}
