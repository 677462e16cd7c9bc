//go:generate go tool -modfile=../../tools/go.mod mdatagen metadata.yaml

// Package ownershipprocessor attributes the peer address of flow records to
// the owner that held it at the flow's start time. Owners come from ownership
// claims, kept per address as non-overlapping time ranges in a store shared
// by every pipeline that lists the same processor ID.
package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"
