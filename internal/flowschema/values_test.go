package flowschema

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

func TestPortAndCount(t *testing.T) {
	for _, tc := range []struct {
		v     pcommon.Value
		port  uint16
		count int64
		ok    bool
	}{
		{pcommon.NewValueInt(443), 443, 443, true},
		{pcommon.NewValueInt(65535), 65535, 65535, true},
		{pcommon.NewValueInt(65536), 0, 65536, true},
		{pcommon.NewValueInt(0), 0, 0, true},
		{pcommon.NewValueInt(-2), 0, 0, false},
		{pcommon.NewValueStr("443"), 0, 0, false},
		{pcommon.NewValueDouble(443), 0, 0, false},
	} {
		assert.Equal(t, tc.port, Port(tc.v), tc.v.AsString())
		n, ok := Count(tc.v)
		assert.Equal(t, tc.count, n, tc.v.AsString())
		assert.Equal(t, tc.ok, ok, tc.v.AsString())
	}
}
