package verify

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Pool is one pool of `zpool status`.
type Pool struct {
	Name  string
	State string // ONLINE, DEGRADED, FAULTED, SUSPENDED, UNAVAIL, …
	// Vdevs is every row of the config: the root vdev (named as the pool,
	// Type "root"), its children depth first, then the dedup, special,
	// log, cache and spare devices.
	Vdevs []Vdev
	// Errors is what follows "errors:", e.g. "No known data errors" or
	// "3 data errors, use '-v' for a list".
	Errors string
}

// Vdev is one row of a pool's config.
type Vdev struct {
	Name string
	// Type is the vdev type: root, mirror, raidz, draid, disk, file,
	// spare, replacing, … From the JSON it is vdev_type; the text does not
	// say it for leaves, so it is "" there, and guessed from the name
	// ("mirror-0" → mirror) for the rest.
	Type string
	// State is ONLINE, DEGRADED, FAULTED, OFFLINE, REMOVED, UNAVAIL, and
	// for spares AVAIL or INUSE. The JSON's CANT_OPEN is given as UNAVAIL,
	// as the text says it.
	State                 string
	Read, Write, Checksum uint64
	// Parent is the vdev this one is a child of ("" at the top of a
	// section); Path is the device of a leaf (the JSON's path, or was
	// for a device not present), so a missing disk, named by its guid,
	// is still named by its disk. The text form has neither.
	Parent, Path string
}

// Topology is the pool's data vdev as Expectations.ZFS.Topology says it:
// the root's children, one mirror or raidz vdev (its children are the
// disks), or disks side by side (one: single, more: stripe). ok is false
// when the tree is not known (the text form) or is none of these (two
// mirrors, say): the vdev types are then said in vdev.
func (p Pool) Topology() (vdev string, disks int, ok bool) {
	var root string
	for _, v := range p.Vdevs {
		// zpool-status.8's example gives the root no vdev_type.
		if v.Type == "root" || (v.Parent == "" && v.Name == p.Name) {
			root = v.Name
			break
		}
	}
	var top []Vdev
	for _, v := range p.Vdevs {
		if root != "" && v.Parent == root {
			top = append(top, v)
		}
	}
	if len(top) == 0 {
		return "", 0, false
	}
	children := func(parent string) int {
		n := 0
		for _, v := range p.Vdevs {
			if v.Parent == parent {
				n++
			}
		}
		return n
	}
	var types []string
	leaves := 0
	for _, v := range top {
		t := v.Type
		if t == "raidz" {
			// zpool names a raidz vdev raidzP-N after its parity
			// (vdev_raidz.c's name); vdev_type says only "raidz".
			if m := raidzName.FindStringSubmatch(v.Name); m != nil {
				t += m[1]
			}
		}
		types = append(types, t)
		if t == "disk" || t == "file" {
			leaves++
		}
	}
	switch {
	case leaves == len(top) && leaves == 1:
		return "single", 1, true
	case leaves == len(top):
		return "stripe", leaves, true
	case len(top) == 1 && (types[0] == "mirror" || strings.HasPrefix(types[0], "raidz")):
		return types[0], children(top[0].Name), true
	}
	return strings.Join(types, "+"), 0, false
}

var raidzName = regexp.MustCompile(`^raidz([1-3])-[0-9]+$`)

// label names a vdev for a person: a disk that is gone is named by its
// guid, so its last device is said too.
func (v Vdev) label() string {
	if v.Path != "" && !strings.HasSuffix(v.Path, "/"+v.Name) {
		return fmt.Sprintf("%s (%s)", v.Name, v.Path)
	}
	return v.Name
}

const noDataErrors = "No known data errors"

// Problems is one short line per thing wrong with the pool, or nothing
// when it is healthy: the pool and every vdev ONLINE (spares AVAIL), no
// read, write or checksum errors, no data errors. A pool can say ONLINE
// with an UNAVAIL spare, and DEGRADED exits 0, so every row is looked at.
func (p Pool) Problems() []string {
	var out []string
	if p.State != "ONLINE" {
		out = append(out, "pool is "+p.State)
	}
	for i, v := range p.Vdevs {
		isRoot := v.Type == "root" || (i == 0 && v.Name == p.Name)
		if !isRoot && v.State != "ONLINE" && v.State != "AVAIL" {
			out = append(out, fmt.Sprintf("vdev %s is %s", v.label(), v.State))
		}
		for _, c := range []struct {
			n    uint64
			what string
		}{{v.Read, "read"}, {v.Write, "write"}, {v.Checksum, "checksum"}} {
			if c.n > 0 {
				out = append(out, fmt.Sprintf("vdev %s has %d %s errors", v.label(), c.n, c.what))
			}
		}
	}
	if p.Errors != "" && p.Errors != noDataErrors {
		out = append(out, "errors: "+p.Errors)
	}
	return out
}

// ParseZpoolStatusJSON reads `zpool status -j [--json-int]
// [--json-flat-vdevs]` (OpenZFS 2.3 and later; cmd/zpool/zpool_main.c,
// status_callback_json). Numbers may be JSON numbers (--json-int) or
// strings. Nested and flat vdev layouts both work: a vdev listed twice
// (flat mode lists an interior vdev and, again, its children) is kept
// once. Pools come in the JSON's order.
func ParseZpoolStatusJSON(out []byte) ([]Pool, error) {
	var doc struct {
		Pools json.RawMessage `json:"pools"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("not zpool status JSON: %v", err)
	}
	if doc.Pools == nil {
		return nil, errors.New("not zpool status JSON: no \"pools\" object")
	}
	names, raws, err := orderedObject(doc.Pools)
	if err != nil {
		return nil, fmt.Errorf("pools: %v", err)
	}
	var pools []Pool
	for i, raw := range raws {
		var jp struct {
			Name       string
			State      string
			ErrorCount *zfsNumber `json:"error_count"`
		}
		if err := json.Unmarshal(raw, &jp); err != nil {
			return nil, fmt.Errorf("pool %s: %v", names[i], err)
		}
		p := Pool{Name: jp.Name, State: jp.State}
		if p.Name == "" {
			p.Name = names[i]
		}
		if jp.ErrorCount != nil {
			if *jp.ErrorCount == 0 {
				p.Errors = noDataErrors
			} else {
				p.Errors = fmt.Sprintf("%d data errors, use '-v' for a list", *jp.ErrorCount)
			}
		}
		keys, vals, err := orderedObject(raw)
		if err != nil {
			return nil, fmt.Errorf("pool %s: %v", p.Name, err)
		}
		seen := map[string]int{}
		for k, key := range keys {
			switch key {
			case "vdevs", "dedup", "special", "logs", "l2cache", "spares":
				if err := walkJSONVdevs(vals[k], "", &p.Vdevs, seen); err != nil {
					return nil, fmt.Errorf("pool %s: %v", p.Name, err)
				}
			}
		}
		pools = append(pools, p)
	}
	return pools, nil
}

// walkJSONVdevs appends the vdevs of raw, children of parent, depth first.
// seen maps a vdev (name and guid) to its index: flat mode lists a vdev at
// the top and again under its parent, which gives its Parent.
func walkJSONVdevs(raw json.RawMessage, parent string, out *[]Vdev, seen map[string]int) error {
	names, raws, err := orderedObject(raw)
	if err != nil {
		return err
	}
	for i, r := range raws {
		var jv struct {
			Name     string
			VdevType string `json:"vdev_type"`
			GUID     any    `json:"guid"`
			State    string
			Read     zfsNumber       `json:"read_errors"`
			Write    zfsNumber       `json:"write_errors"`
			Checksum zfsNumber       `json:"checksum_errors"`
			Vdevs    json.RawMessage `json:"vdevs"`
			Path     string
			Was      string
		}
		if err := json.Unmarshal(r, &jv); err != nil {
			return fmt.Errorf("vdev %s: %v", names[i], err)
		}
		if jv.Name == "" {
			jv.Name = names[i]
		}
		key := jv.Name + "\x00" + fmt.Sprint(jv.GUID)
		if i, ok := seen[key]; !ok {
			seen[key] = len(*out)
			*out = append(*out, Vdev{
				Name: jv.Name, Type: jv.VdevType, State: zfsJSONState(jv.State),
				Read: uint64(jv.Read), Write: uint64(jv.Write), Checksum: uint64(jv.Checksum),
				Parent: parent, Path: cmp.Or(jv.Path, jv.Was),
			})
		} else if (*out)[i].Parent == "" {
			(*out)[i].Parent = parent
		}
		if len(jv.Vdevs) > 0 {
			if err := walkJSONVdevs(jv.Vdevs, jv.Name, out, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// zfsJSONState maps the JSON's vdev_state_str names to the text's.
func zfsJSONState(s string) string {
	switch s {
	case "CANT_OPEN":
		return "UNAVAIL"
	case "HEALTHY": // as zpool-status.8's JSON example spells ONLINE
		return "ONLINE"
	}
	return s
}

// zfsNumber is a count that zpool and zfs print as a JSON number
// (--json-int) or as a string, exact ("3") or human ("1.2K").
type zfsNumber uint64

func (n *zfsNumber) UnmarshalJSON(b []byte) error {
	s := string(b)
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := parseNicenum(s)
	if err != nil {
		return err
	}
	*n = zfsNumber(v)
	return nil
}

// parseNicenum reads "0", "17", "1.2K" (zfs_nicenum, powers of 1024).
func parseNicenum(s string) (uint64, error) {
	if s == "" || s == "-" {
		return 0, nil
	}
	if v, err := strconv.ParseUint(s, 10, 64); err == nil {
		return v, nil
	}
	mult := 1.0
	if i := strings.IndexByte("KMGTPE", s[len(s)-1]); i >= 0 {
		mult = math.Pow(1024, float64(i+1))
		s = s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("bad count %q", s)
	}
	return uint64(f * mult), nil
}

// orderedObject splits a JSON object into its keys and values in order.
func orderedObject(raw json.RawMessage) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	t, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("not a JSON object")
	}
	var keys []string
	var vals []json.RawMessage
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	return keys, vals, nil
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*m")

// ParseZpoolStatus reads the text of `zpool status [POOL…]`, for hosts
// with ZFS before 2.3 (cmd/zpool/zpool_main.c, status_callback and
// print_status_config): "pool:", "state:", the config table (NAME STATE
// READ WRITE CKSUM, a row per vdev indented by depth, with "logs",
// "cache", "spares", "special" and "dedup" section rows, and spare rows
// without counters), and "errors:". "no pools available" is no pools.
func ParseZpoolStatus(out string) ([]Pool, error) {
	out = ansiEscape.ReplaceAllString(out, "")
	var (
		pools    []Pool
		cur      *Pool
		inConfig bool
	)
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		t := strings.TrimSpace(line)
		key, val, _ := strings.Cut(t, ":")
		val = strings.TrimSpace(val)
		switch {
		case t == "":
			continue
		case key == "pool" && !strings.HasPrefix(line, "\t"):
			pools = append(pools, Pool{Name: val})
			cur = &pools[len(pools)-1]
			inConfig = false
			continue
		case cur == nil:
			if t == "no pools available" {
				return nil, nil
			}
			continue
		case key == "state" && !inConfig:
			cur.State = val
			continue
		case key == "errors":
			cur.Errors = val
			inConfig = false
			continue
		case key == "config":
			inConfig = true
			continue
		case !inConfig:
			continue
		}
		f := strings.Fields(t)
		if f[0] == "NAME" && len(f) >= 2 && f[1] == "STATE" {
			continue
		}
		if len(f) == 1 { // logs, cache, spares, special, dedup
			continue
		}
		v := Vdev{Name: f[0], State: f[1]}
		if len(f) >= 5 && isCount(f[2]) && isCount(f[3]) && isCount(f[4]) {
			var err error
			if v.Read, err = parseNicenum(f[2]); err == nil {
				if v.Write, err = parseNicenum(f[3]); err == nil {
					v.Checksum, err = parseNicenum(f[4])
				}
			}
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", i+1, err)
			}
		}
		v.Type = zfsTypeFromName(v.Name, len(cur.Vdevs) == 0 && v.Name == cur.Name)
		cur.Vdevs = append(cur.Vdevs, v)
	}
	for _, p := range pools {
		if p.State == "" {
			return nil, fmt.Errorf("pool %s: no state line", p.Name)
		}
	}
	return pools, nil
}

var countRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?[KMGTPE]?$`)

func isCount(s string) bool { return countRE.MatchString(s) }

// zfsTypeFromName guesses an interior vdev's type from its name
// ("mirror-0", "raidz2-1", "draid1:…", "spare-0", "replacing-0").
func zfsTypeFromName(name string, root bool) string {
	if root {
		return "root"
	}
	for _, t := range []string{"mirror", "raidz", "draid", "spare", "replacing", "indirect"} {
		if strings.HasPrefix(name, t) {
			rest := name[len(t):]
			if rest != "" && (rest[0] == '-' || rest[0] == ':' || rest[0] >= '0' && rest[0] <= '9') {
				return t
			}
		}
	}
	return ""
}

// Dataset is a dataset's encryption properties from `zfs get`.
type Dataset struct {
	Name string
	// Encryption is the cipher ("aes-256-gcm") or "off".
	Encryption string
	// KeyStatus is "available", "unavailable", or "-" when the dataset is
	// not encrypted.
	KeyStatus string
	// EncryptionRoot is the dataset whose key this one uses, or "-".
	EncryptionRoot string
}

// ParseZfsGet reads `zfs get -H -p [-r] -o name,property,value[,source]
// encryption,keystatus,encryptionroot DATASET…`: tab-separated name,
// property, value, and any further columns (ignored). Without -H (a
// header, columns aligned with spaces) it still works for values without
// spaces. Datasets come in the order zfs first prints them.
func ParseZfsGet(out string) ([]Dataset, error) {
	var ds []Dataset
	index := map[string]int{}
	header := false
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		var f []string
		if strings.Contains(line, "\t") {
			f = strings.Split(line, "\t")
		} else {
			f = strings.Fields(line)
			if len(f) >= 3 && f[0] == "NAME" && f[1] == "PROPERTY" {
				header = true
				continue
			}
			if !header { // -H output has tabs; this is a message
				return nil, fmt.Errorf("line %d: not zfs get output: %q", i+1, line)
			}
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("line %d: want name, property and value: %q", i+1, line)
		}
		setDatasetProp(&ds, index, f[0], f[1], f[2])
	}
	return ds, nil
}

// ParseZfsGetJSON reads `zfs get -j [--json-int] [-r] encryption,…`
// (OpenZFS 2.3 and later; zfs-get(8) in man/man8/zfs-set.8,
// lib/libzfs/libzfs_util.c zprop_nvlist_one_property):
// {"datasets": {NAME: {"name", "properties": {PROP: {"value",
// "source"}}}}}.
func ParseZfsGetJSON(out []byte) ([]Dataset, error) {
	var doc struct {
		Datasets json.RawMessage `json:"datasets"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("not zfs get JSON: %v", err)
	}
	if doc.Datasets == nil {
		return nil, errors.New("not zfs get JSON: no \"datasets\" object")
	}
	names, raws, err := orderedObject(doc.Datasets)
	if err != nil {
		return nil, fmt.Errorf("datasets: %v", err)
	}
	var ds []Dataset
	index := map[string]int{}
	for i, raw := range raws {
		var jd struct {
			Name       string
			Properties map[string]struct {
				Value any
			}
		}
		if err := json.Unmarshal(raw, &jd); err != nil {
			return nil, fmt.Errorf("dataset %s: %v", names[i], err)
		}
		if jd.Name == "" {
			jd.Name = names[i]
		}
		setDatasetProp(&ds, index, jd.Name, "", "")
		for prop, v := range jd.Properties {
			val := fmt.Sprint(v.Value)
			if f, ok := v.Value.(float64); ok {
				val = strconv.FormatFloat(f, 'f', -1, 64)
			}
			setDatasetProp(&ds, index, jd.Name, prop, val)
		}
	}
	return ds, nil
}

func setDatasetProp(ds *[]Dataset, index map[string]int, name, prop, val string) {
	i, ok := index[name]
	if !ok {
		i = len(*ds)
		index[name] = i
		*ds = append(*ds, Dataset{Name: name})
	}
	d := &(*ds)[i]
	switch prop {
	case "encryption":
		d.Encryption = val
	case "keystatus":
		d.KeyStatus = val
	case "encryptionroot":
		d.EncryptionRoot = val
	}
}
