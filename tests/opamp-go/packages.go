package main

// The driver's package store: the opamp-go client library's PackagesStateProvider, which its
// packages syncer calls to learn what is installed and to store what it downloads. The
// download, the status reports (Installing, Downloading, InstallFailed with the error) and
// the all-packages hash bookkeeping are the library's; this store only keeps state, writes
// the file, and verifies its content against the offered content_hash (the library hands
// the hash to UpdateContent and leaves the check to the agent, as every agent must).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"
)

// maxPackageBytes bounds a download: a test package is small, a runaway server is not.
const maxPackageBytes = 64 << 20

type packageStore struct {
	dir string

	mu           sync.Mutex
	allHash      []byte
	state        map[string]types.PackageState
	contentHash  map[string][]byte
	lastStatuses *protobufs.PackageStatuses
	// What was last emitted per package, to emit changes only.
	emitted map[string]string
}

var _ types.PackagesStateProvider = (*packageStore)(nil)

func newPackageStore(dir string) (*packageStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &packageStore{
		dir:         dir,
		state:       map[string]types.PackageState{},
		contentHash: map[string][]byte{},
		emitted:     map[string]string{},
	}, nil
}

func (s *packageStore) AllPackagesHash() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.allHash...), nil
}

func (s *packageStore) SetAllPackagesHash(hash []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allHash = append([]byte(nil), hash...)
	return nil
}

func (s *packageStore) Packages() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.state))
	for k := range s.state {
		names = append(names, k)
	}
	sort.Strings(names)
	return names, nil
}

func (s *packageStore) PackageState(name string) (types.PackageState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.state[name]; ok {
		return st, nil
	}
	return types.PackageState{Exists: false}, nil
}

// SetPackageState stores the state with Exists set: after a first install the library passes
// the state it read before CreatePackage (Exists false), and storing that as is would make
// the next sync create the package again.
func (s *packageStore) SetPackageState(name string, st types.PackageState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Exists = true
	s.state[name] = st
	return nil
}

func (s *packageStore) CreatePackage(name string, typ protobufs.PackageType) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.state[name]; ok {
		return fmt.Errorf("package %s exists", name)
	}
	s.state[name] = types.PackageState{Exists: true, Type: typ}
	return nil
}

func (s *packageStore) FileContentHash(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.contentHash[name], nil
}

func (s *packageStore) path(name string) string {
	return filepath.Join(s.dir, hex.EncodeToString([]byte(name))+".pkg")
}

// UpdateContent writes the downloaded bytes beside the package's file and moves them over it
// only when their SHA-256 equals the offered content hash: a corrupted or tampered download
// never replaces what is installed.
func (s *packageStore) UpdateContent(ctx context.Context, name string, data io.Reader, contentHash, _ []byte) error {
	tmp, err := os.CreateTemp(s.dir, "download-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(data, maxPackageBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	if n > maxPackageBytes {
		return fmt.Errorf("package larger than %d bytes", maxPackageBytes)
	}
	got := h.Sum(nil)
	if len(contentHash) != sha256.Size || !bytesEqual(got, contentHash) {
		return errors.New("content hash mismatch: downloaded sha256 " + hex.EncodeToString(got) +
			", offered " + hex.EncodeToString(contentHash))
	}
	if err := os.Rename(tmp.Name(), s.path(name)); err != nil {
		return err
	}
	s.mu.Lock()
	s.contentHash[name] = append([]byte(nil), contentHash...)
	s.mu.Unlock()
	emit("package_installed_file", "name", name, "bytes", n, "sha256", hex.EncodeToString(got))
	return nil
}

func bytesEqual(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s *packageStore) DeletePackage(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.state, name)
	delete(s.contentHash, name)
	_ = os.Remove(s.path(name))
	return nil
}

func (s *packageStore) LastReportedStatuses() (*protobufs.PackageStatuses, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastStatuses == nil {
		return nil, nil
	}
	return proto.Clone(s.lastStatuses).(*protobufs.PackageStatuses), nil
}

// SetLastReportedStatuses is called by the library each time it reports: each package's
// status is emitted as it changes, so a test sees what the library sent.
func (s *packageStore) SetLastReportedStatuses(st *protobufs.PackageStatuses) error {
	s.mu.Lock()
	s.lastStatuses = proto.Clone(st).(*protobufs.PackageStatuses)
	type line struct{ name, status, has, offered, errMsg string }
	var changed []line
	for name, p := range st.GetPackages() {
		l := line{name, p.GetStatus().String(), p.GetAgentHasVersion(), p.GetServerOfferedVersion(), p.GetErrorMessage()}
		key := fmt.Sprintf("%s|%s|%s|%s", l.status, l.has, l.offered, l.errMsg)
		if s.emitted[name] != key {
			s.emitted[name] = key
			changed = append(changed, l)
		}
	}
	s.mu.Unlock()
	sort.Slice(changed, func(i, j int) bool { return changed[i].name < changed[j].name })
	for _, l := range changed {
		kv := []any{"name", l.name, "status", l.status, "has_version", l.has, "offered_version", l.offered}
		if l.errMsg != "" {
			kv = append(kv, "error", l.errMsg)
		}
		emit("package_status", kv...)
	}
	return nil
}
