package localowner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHostUnicastAddrsSkipsLoopback(t *testing.T) {
	addrs, err := HostUnicastAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		assert.False(t, a.IsLoopback() || a.IsLinkLocalUnicast() || a.Is4In6(), a.String())
	}
}
