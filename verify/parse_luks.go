package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// LUKSUnlock is what can open a LUKS2 volume, read from its header's JSON
// metadata (`cryptsetup luksDump --dump-json-metadata`).
type LUKSUnlock struct {
	Keyslots  []string    // every keyslot
	Passwords []string    // keyslots no token claims: a password or a key file
	TPM2      []TPM2Token // systemd-tpm2 tokens
	Recovery  []string    // keyslots of systemd-recovery tokens
	Other     []string    // types of other tokens (fido2, pkcs11, …)
}

// TPM2Token is a systemd-tpm2 token: the keyslots it opens and the PCRs
// its policy is bound to.
type TPM2Token struct {
	Keyslots []string
	PCRs     []int
	Blob     string // the sealed key (base64), new with every enrollment
}

// luksID is a keyslot or token id: a JSON string ("1"), or a number in
// what other tools write.
type luksID string

func (id *luksID) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*id = luksID(s)
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("keyslot id %s is neither a string nor a number", b)
	}
	*id = luksID(strconv.Itoa(n))
	return nil
}

// ParseLuksDumpJSON reads the metadata. systemd 252 names a TPM2 token's
// PCRs "tpm2-pcrs"; newer ones write "tpm2-hash-pcrs" (and
// "tpm2-pubkey-pcrs" for signed policies): any of them counts.
func ParseLuksDumpJSON(out []byte) (LUKSUnlock, error) {
	var meta struct {
		Keyslots map[luksID]json.RawMessage `json:"keyslots"`
		Tokens   map[luksID]struct {
			Type       string   `json:"type"`
			Keyslots   []luksID `json:"keyslots"`
			PCRs       []int    `json:"tpm2-pcrs"`
			HashPCRs   []int    `json:"tpm2-hash-pcrs"`
			PubkeyPCRs []int    `json:"tpm2-pubkey-pcrs"`
			Blob       string   `json:"tpm2-blob"`
		} `json:"tokens"`
	}
	var u LUKSUnlock
	if err := json.Unmarshal(out, &meta); err != nil {
		return u, fmt.Errorf("reading the LUKS2 metadata: %w", err)
	}
	if meta.Keyslots == nil {
		return u, errors.New("the LUKS2 metadata has no keyslots object")
	}
	claimed := map[string]bool{}
	ids := make([]string, 0, len(meta.Tokens))
	for id := range meta.Tokens {
		ids = append(ids, string(id))
	}
	sortIDs(ids)
	for _, id := range ids {
		t := meta.Tokens[luksID(id)]
		var slots []string
		for _, k := range t.Keyslots {
			slots = append(slots, string(k))
			claimed[string(k)] = true
		}
		switch t.Type {
		case "systemd-tpm2":
			pcrs := append(append(append([]int{}, t.PCRs...), t.HashPCRs...), t.PubkeyPCRs...)
			sort.Ints(pcrs)
			u.TPM2 = append(u.TPM2, TPM2Token{Keyslots: slots, PCRs: pcrs, Blob: t.Blob})
		case "systemd-recovery":
			u.Recovery = append(u.Recovery, slots...)
		default:
			u.Other = append(u.Other, t.Type)
		}
	}
	for id := range meta.Keyslots {
		u.Keyslots = append(u.Keyslots, string(id))
	}
	sortIDs(u.Keyslots)
	for _, k := range u.Keyslots {
		if !claimed[k] {
			u.Passwords = append(u.Passwords, k)
		}
	}
	return u, nil
}

// sortIDs orders keyslot ids as numbers: "10" after "9".
func sortIDs(ids []string) {
	sort.Slice(ids, func(i, j int) bool {
		a, errA := strconv.Atoi(ids[i])
		b, errB := strconv.Atoi(ids[j])
		if errA != nil || errB != nil {
			return ids[i] < ids[j]
		}
		return a < b
	})
}
