package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"strings"
	"testing"

	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"
)

// The store keeps a file only when its bytes hash to the offered content hash; a corrupted
// download leaves what was installed in place.
func TestStoreChecksTheContentHash(t *testing.T) {
	s, err := newPackageStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePackage("collector", protobufs.PackageType_PackageType_TopLevel); err != nil {
		t.Fatal(err)
	}
	good := []byte("package v1")
	sum := sha256.Sum256(good)
	if err := s.UpdateContent(context.Background(), "collector", bytes.NewReader(good), sum[:], nil); err != nil {
		t.Fatalf("good content refused: %v", err)
	}
	if h, _ := s.FileContentHash("collector"); !bytes.Equal(h, sum[:]) {
		t.Fatalf("content hash not kept: %x", h)
	}
	other := sha256.Sum256([]byte("package v2"))
	err = s.UpdateContent(context.Background(), "collector", strings.NewReader("package v2, corrupted"), other[:], nil)
	if err == nil || !strings.Contains(err.Error(), "content hash mismatch") {
		t.Fatalf("corrupted content accepted or wrong error: %v", err)
	}
	if got, _ := os.ReadFile(s.path("collector")); !bytes.Equal(got, good) {
		t.Fatalf("installed file replaced by a corrupted download: %q", got)
	}
	if h, _ := s.FileContentHash("collector"); !bytes.Equal(h, sum[:]) {
		t.Fatalf("content hash changed by a failed update: %x", h)
	}
	// SetPackageState marks the package existing whatever state the library passes.
	if err := s.SetPackageState("collector", types.PackageState{Exists: false, Version: "1"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.PackageState("collector"); !st.Exists {
		t.Fatal("stored state must exist")
	}
}
