//go:build !linux

package ebpfflowreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
)

func TestCreateLogsIsLinuxOnly(t *testing.T) {
	f := NewFactory()
	_, err := f.CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), f.CreateDefaultConfig(), consumertest.NewNop())
	require.ErrorContains(t, err, "works on Linux only")
}
