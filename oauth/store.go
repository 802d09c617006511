package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode"

	"github.com/caddyserver/certmagic"
)

// storagePrefix is the storage folder holding one JSON file per account.
const storagePrefix = "claude_balancer/oauth"

// record is what storage holds for one account. The account is inside too,
// because a name that is not path-safe is stored under its hash.
type record struct {
	Account      string    `json:"account_email"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	ExpiresAt    time.Time `json:"expires_at"`
	Scopes       []string  `json:"scopes,omitempty"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
	RefreshedAt  time.Time `json:"refreshed_at,omitzero"`
}

// normalize gives an account's identity: emails compare case-insensitively.
func normalize(account string) string {
	return strings.ToLower(strings.TrimSpace(account))
}

// checkAccount rejects names that cannot be an account.
func checkAccount(account string) error {
	if account == "" {
		return errors.New("missing account_email")
	}
	if len(account) > 320 {
		return errors.New("account_email is too long")
	}
	for _, r := range account {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("account_email %q contains spaces or control characters", account)
		}
	}
	return nil
}

// fileName is the account's name in storage keys and lock names: the email
// itself when it is safe in a path on every storage backend, else its hash.
func fileName(account string) string {
	safe := len(account) <= 128 && account[0] != '.' && !strings.Contains(account, "..")
	for i := 0; safe && i < len(account); i++ {
		c := account[i]
		safe = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("@._+-", c) >= 0
	}
	if safe {
		return account
	}
	sum := sha256.Sum256([]byte(account))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// storageKey is where an account's record lives.
func storageKey(account string) string {
	return storagePrefix + "/" + fileName(account) + ".json"
}

// lockName is the storage lock that serialises refreshes of one account
// across instances.
func lockName(account string) string {
	return "claude_balancer_oauth_" + fileName(account)
}

// loadRecord reads an account's record; nil without error when none is stored.
func loadRecord(ctx context.Context, st certmagic.Storage, account string) (*record, error) {
	b, err := st.Load(ctx, storageKey(account))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load oauth token of %s: %w", account, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("decode oauth token of %s: %w", account, err)
	}
	if normalize(rec.Account) != account || rec.AccessToken == "" {
		return nil, fmt.Errorf("oauth token stored for %s is not valid", account)
	}
	rec.Account = account
	return &rec, nil
}

// storeRecord writes an account's record.
func storeRecord(ctx context.Context, st certmagic.Storage, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode oauth token of %s: %w", rec.Account, err)
	}
	if err := st.Store(ctx, storageKey(rec.Account), b); err != nil {
		return fmt.Errorf("store oauth token of %s: %w", rec.Account, err)
	}
	return nil
}

// deleteRecord removes an account's record; a missing one is not an error.
func deleteRecord(ctx context.Context, st certmagic.Storage, account string) error {
	err := st.Delete(ctx, storageKey(account))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete oauth token of %s: %w", account, err)
	}
	return nil
}

// storedAccounts lists the accounts that have a record in storage.
func storedAccounts(ctx context.Context, st certmagic.Storage) ([]string, error) {
	keys, err := st.List(ctx, storagePrefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list oauth tokens: %w", err)
	}
	var out []string
	for _, k := range keys {
		if !strings.HasSuffix(k, ".json") {
			continue
		}
		b, err := st.Load(ctx, k)
		if err != nil {
			continue
		}
		var rec struct {
			Account string `json:"account_email"`
		}
		if json.Unmarshal(b, &rec) == nil && rec.Account != "" {
			out = append(out, normalize(rec.Account))
		}
	}
	return out, nil
}
