package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/types"
)

// maxCgroupDepth bounds the walk below root: a container's cgroup is at
// kubepods[.slice]/<qos>/<pod>/<container>, depth 4.
const maxCgroupDepth = 5

// scanCgroups walks the kubepods cgroups below root and returns the cgroup
// ID (the directory's inode number) of every cgroup at or below a pod's
// cgroup that match recognises.
func scanCgroups(root string, match func(dir string) (types.UID, bool)) map[uint64]types.UID {
	out := map[uint64]types.UID{}
	entries, err := os.ReadDir(root)
	if err != nil {
		return out
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "kubepods") {
			continue
		}
		top := filepath.Join(root, e.Name())
		_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil //nolint:nilerr // a cgroup removed mid-walk is skipped
			}
			rel, _ := filepath.Rel(root, path)
			if strings.Count(rel, string(filepath.Separator)) >= maxCgroupDepth {
				return fs.SkipDir
			}
			uid, ok := match(d.Name())
			if !ok {
				return nil
			}
			_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil //nolint:nilerr // as above
				}
				if info, err := d.Info(); err == nil {
					if st, ok := info.Sys().(*syscall.Stat_t); ok {
						out[st.Ino] = uid
					}
				}
				return nil
			})
			return fs.SkipDir
		})
	}
	return out
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted: the
// cgroup2 mount of /proc/self/mountinfo (/sys/fs/cgroup on a pure v2 host,
// often /sys/fs/cgroup/unified on a hybrid one), /sys/fs/cgroup if none.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "/sys/fs/cgroup"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4]
			}
		}
	}
	return "/sys/fs/cgroup"
}
