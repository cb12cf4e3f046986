package verify

import (
	"fmt"
	"slices"
	"strings"

	"github.com/keystone-nix/keystone/internal/text"
)

// The cipher every dataset under an encryption root must use.
const zfsCipher = "aes-256-gcm"

// maxUsage is the disk usage, in percent, at which a mount fails.
const maxUsage = 90

var zfsCheck = Check{
	Name:    "zfs",
	Applies: func(e *Expectations) (bool, string) { return e.ZFS != nil, "no ZFS pools in the config" },
	Commands: func(e *Expectations) []string {
		cmds := []string{
			// JSON from ZFS 2.3 on; the text form before.
			"zpool status -j --json-int --json-flat-vdevs -- " + strings.Join(quoteAll(e.ZFS.Pools), " ") +
				" 2>/dev/null || zpool status -- " + strings.Join(quoteAll(e.ZFS.Pools), " "),
		}
		if len(e.ZFS.EncryptionRoots) > 0 {
			cmds = append(cmds, "zfs get -H -p -r -o name,property,value encryption,keystatus,encryptionroot -- "+
				strings.Join(quoteAll(e.ZFS.EncryptionRoots), " "))
		}
		return cmds
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("zpool status", outs[0]); !ok {
			return Fail, msg
		}
		var pools []Pool
		var err error
		if out := strings.TrimSpace(outs[0].Stdout); strings.HasPrefix(out, "{") {
			pools, err = ParseZpoolStatusJSON([]byte(out))
		} else {
			pools, err = ParseZpoolStatus(out)
		}
		if err != nil {
			return Fail, "zpool status: " + err.Error()
		}
		var bad, good []string
		for _, name := range e.ZFS.Pools {
			i := slices.IndexFunc(pools, func(p Pool) bool { return p.Name == name })
			if i < 0 {
				bad = append(bad, "pool "+name+" is not imported")
				continue
			}
			problems := pools[i].Problems()
			shape := ""
			if want, ok := e.ZFS.Topology[name]; ok {
				var p string
				shape, p = judgeTopology(pools[i], want)
				if p != "" {
					problems = append(problems, p)
				}
			}
			if len(problems) > 0 {
				bad = append(bad, fmt.Sprintf("pool %s: %s", name, strings.Join(problems, ", ")))
				continue
			}
			good = append(good, fmt.Sprintf("%s %s%s", name, pools[i].State, shape))
		}
		if len(outs) > 1 {
			bad, good = judgeEncryption(e, outs[1], bad, good)
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, "; ")
		}
		return Pass, strings.Join(good, "; ")
	},
}

// judgeTopology compares the pool's live vdev tree with the layout's:
// shape is said when it matches (" (mirror of 2 disks)"), problem when it
// does not. The text of zpool status before ZFS 2.3 gives no tree: then
// only the vdev states are judged, and shape says so.
func judgeTopology(p Pool, want Topology) (shape, problem string) {
	vdev, disks, ok := p.Topology()
	describe := func(v string, n int) string {
		switch v {
		case "single":
			return "one disk"
		case "stripe":
			return fmt.Sprintf("a stripe of %d disks", n)
		}
		return fmt.Sprintf("%s of %d disks", v, n)
	}
	switch {
	case !ok && vdev == "":
		return " (layout not compared: no vdev tree without zpool status -j)", ""
	case !ok:
		return "", fmt.Sprintf("vdevs are %s, want %s", vdev, describe(want.Vdev, want.Disks))
	case vdev != want.Vdev || disks != want.Disks:
		return "", fmt.Sprintf("is %s, want %s", describe(vdev, disks), describe(want.Vdev, want.Disks))
	}
	return " (" + describe(vdev, disks) + ")", ""
}

func judgeEncryption(e *Expectations, o Output, bad, good []string) ([]string, []string) {
	if msg, ok := failed("zfs get", o); !ok {
		return append(bad, msg), good
	}
	datasets, err := ParseZfsGet(o.Stdout)
	if err != nil {
		return append(bad, "zfs get: "+err.Error()), good
	}
	for _, root := range e.ZFS.EncryptionRoots {
		n := 0
		for _, d := range datasets {
			if d.Name != root && !strings.HasPrefix(d.Name, root+"/") {
				continue
			}
			n++
			switch {
			case d.Encryption != zfsCipher:
				bad = append(bad, fmt.Sprintf("%s has encryption=%s, want %s", d.Name, d.Encryption, zfsCipher))
			case d.KeyStatus != "available":
				bad = append(bad, fmt.Sprintf("%s key is %s", d.Name, d.KeyStatus))
			}
		}
		if n == 0 {
			bad = append(bad, "encryption root "+root+" does not exist")
			continue
		}
		good = append(good, fmt.Sprintf("%d datasets under %s encrypted (%s, key available)", n, root, zfsCipher))
	}
	return bad, good
}

var luksCheck = Check{
	Name: "luks",
	// A credstore is closed again before switch-root: only devices that
	// stay open are checked here (the tpm check reads every volume).
	Applies: func(e *Expectations) (bool, string) {
		return e.LUKS != nil && len(e.LUKS.Devices) > 0, "no LUKS devices that stay open in the config"
	},
	Commands: func(e *Expectations) []string {
		cmds := []string{"findmnt -J -o TARGET,SOURCE,FSTYPE /"}
		for _, d := range e.LUKS.Devices {
			cmds = append(cmds, "cryptsetup status -- "+shellQuote(d))
		}
		return cmds
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		var bad, good []string
		for i, d := range e.LUKS.Devices {
			o := outs[i+1]
			if o.Err != nil {
				bad = append(bad, "cryptsetup status "+d+": "+o.Err.Error())
				continue
			}
			st, err := ParseCryptsetupStatus(d, o.Stdout)
			switch {
			case err != nil:
				bad = append(bad, "cryptsetup status "+d+": "+evidence(err.Error(), text.FirstLine(o.Stderr)))
			case !st.Active:
				bad = append(bad, d+" is not open")
			default:
				good = append(good, fmt.Sprintf("%s open (%s, %s)", d, st.Type, st.Cipher))
			}
		}
		if msg, ok := failed("findmnt /", outs[0]); !ok {
			bad = append(bad, msg)
		} else if mounts, err := ParseFindmntJSON([]byte(outs[0].Stdout)); err != nil || len(mounts) == 0 {
			bad = append(bad, "findmnt /: cannot read its output")
		} else {
			src := mounts[0].Source
			if !slices.ContainsFunc(e.LUKS.Devices, func(d string) bool { return src == "/dev/mapper/"+d }) {
				bad = append(bad, "/ is mounted from "+src+", not from dm-crypt")
			} else {
				good = append(good, "/ on "+src)
			}
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, "; ")
		}
		return Pass, strings.Join(good, "; ")
	},
}

var mountsCheck = Check{
	Name:    "mounts",
	Applies: func(e *Expectations) (bool, string) { return len(e.Mounts) > 0, "no mounts in the config" },
	Commands: func(*Expectations) []string {
		return []string{"findmnt -J -o TARGET,SOURCE,FSTYPE", "df -P"}
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("findmnt", outs[0]); !ok {
			return Fail, msg
		}
		mounts, err := ParseFindmntJSON([]byte(outs[0].Stdout))
		if err != nil {
			return Fail, "findmnt: " + err.Error()
		}
		usage, _ := ParseDf(outs[1].Stdout)
		var bad, good []string
		for _, want := range e.Mounts {
			if !slices.ContainsFunc(mounts, func(m Mount) bool { return m.Target == want }) {
				bad = append(bad, want+" is not mounted")
				continue
			}
			i := slices.IndexFunc(usage, func(u Usage) bool { return u.Target == want })
			if i < 0 {
				good = append(good, want)
				continue
			}
			if u := usage[i]; u.Percent >= maxUsage {
				bad = append(bad, fmt.Sprintf("%s is %d%% full", want, u.Percent))
			} else {
				good = append(good, fmt.Sprintf("%s %d%%", want, u.Percent))
			}
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, "; ")
		}
		return Pass, strings.Join(good, ", ")
	},
}
