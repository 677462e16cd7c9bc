// Package docs checks the collector configuration that the documentation
// shows users: every block of our components in the READMEs, docs/ and the
// shipped and test configs must name only options the components have, so
// that an option renamed or removed in code cannot live on in a copied
// example.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"

	"github.com/flowattr/flowattr/connector/flowmetricsconnector"
	"github.com/flowattr/flowattr/exporter/flowmapexporter"
	"github.com/flowattr/flowattr/processor/ownershipprocessor"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver"
)

// envRef is a ${env:NAME} or ${env:NAME:-default} reference: the blocks are
// checked for their keys, so any scalar stands in for it.
var envRef = regexp.MustCompile(`\$\{env:[A-Za-z0-9_]+(:-[^}]*)?\}`)

var fencedBlock = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```")

func TestDocumentedConfigsUseKnownOptions(t *testing.T) {
	factories := map[string]map[component.Type]interface{ CreateDefaultConfig() component.Config }{
		"receivers":  {ebpfflowreceiver.NewFactory().Type(): ebpfflowreceiver.NewFactory()},
		"processors": {ownershipprocessor.NewFactory().Type(): ownershipprocessor.NewFactory()},
		"connectors": {flowmetricsconnector.NewFactory().Type(): flowmetricsconnector.NewFactory()},
		"exporters":  {flowmapexporter.NewFactory().Type(): flowmapexporter.NewFactory()},
	}
	var files []string
	for _, pattern := range []string{"../../*.md", "../../docs/*.md", "../../*/*/README.md", "../../config/*.yaml", "../../testdata/*.yaml", "../../testdata/*/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		blocks := []string{string(b)}
		if strings.HasSuffix(f, ".md") {
			blocks = blocks[:0]
			for _, m := range fencedBlock.FindAllStringSubmatch(string(b), -1) {
				blocks = append(blocks, m[1])
			}
		}
		for i, block := range blocks {
			var doc map[string]any
			if yaml.Unmarshal([]byte(envRef.ReplaceAllString(block, "1")), &doc) != nil {
				continue // not YAML: a shell or Go block
			}
			for kind, byType := range factories {
				section, _ := doc[kind].(map[string]any)
				for id, v := range section {
					var cid component.ID
					if cid.UnmarshalText([]byte(id)) != nil {
						continue
					}
					factory, ok := byType[cid.Type()]
					if !ok {
						continue
					}
					settings, _ := v.(map[string]any)
					err := confmap.NewFromStringMap(settings).Unmarshal(factory.CreateDefaultConfig())
					// Placeholders may have the wrong type for an option;
					// an unknown option is what this test is for.
					if err != nil && strings.Contains(err.Error(), "invalid keys") {
						t.Errorf("%s, block %d, %s %s: %v", f, i+1, kind, id, err)
					}
					checked++
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d component blocks: the file patterns no longer find the documentation", checked)
	}
	t.Logf("%d component blocks checked in %d files", checked, len(files))
}
