package wallaroo

import (
	"fmt"
	"strings"
)

// Addr is one address from the command line: `NAME@HOST:PORT` gives a Name, `HOST:PORT` none.
// Ports stay strings, as in Wallaroo.
type Addr struct {
	Name string
	Host string
	Port string
}

// TCPParseInputAddrs reads the `-i/--in` option (`--in X`, `--in=X`, `-i X`): a comma-separated
// list of `HOST:PORT` or `NAME@HOST:PORT`. Like Wallaroo's tcp_parse_input_addrs, the last
// occurrence counts and other arguments are ignored.
func TCPParseInputAddrs(args []string) ([]Addr, error) {
	return parseAddrs(args, "-i", "--in", "the input addresses", true)
}

// TCPParseOutputAddrs reads the `-o/--out` option the same way; a `NAME@` prefix is dropped.
func TCPParseOutputAddrs(args []string) ([]Addr, error) {
	return parseAddrs(args, "-o", "--out", "the output addresses", false)
}

func parseAddrs(args []string, short, long, what string, keepName bool) ([]Addr, error) {
	value, found := "", false
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			break
		}
		if arg == short || arg == long {
			if i+1 >= len(args) || (strings.HasPrefix(args[i+1], "-") && len(args[i+1]) > 1) {
				return nil, fmt.Errorf("%s/%s: expected one argument", short, long)
			}
			i++
			value, found = args[i], true
		} else if v, ok := strings.CutPrefix(arg, long+"="); ok {
			value, found = v, true
		} else if v, ok := strings.CutPrefix(arg, short); ok && v != "" && !strings.HasPrefix(arg, "--") {
			value, found = strings.TrimPrefix(v, "="), true
		}
	}
	if !found {
		return nil, fmt.Errorf("missing %s/%s (%s, e.g. %s host:port)", short, long, what, long)
	}
	var addrs []Addr
	for _, entry := range strings.Split(value, ",") {
		a, err := parseAddr(entry, long)
		if err != nil {
			return nil, err
		}
		if !keepName {
			a.Name = ""
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

func parseAddr(entry, flag string) (Addr, error) {
	var a Addr
	address := entry
	at := strings.LastIndex(entry, "@")
	if at >= 0 {
		a.Name, address = entry[:at], entry[at+1:]
	}
	colon := strings.LastIndex(address, ":")
	if colon >= 0 {
		a.Host, a.Port = address[:colon], address[colon+1:]
	}
	if colon < 0 || a.Host == "" || a.Port == "" || (at >= 0 && a.Name == "") {
		return Addr{}, fmt.Errorf("%s: %q is not [NAME@]HOST:PORT", flag, entry)
	}
	return a, nil
}
