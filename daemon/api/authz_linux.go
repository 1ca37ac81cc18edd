package api

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// RequirePeerGroup makes the server answer only root, the daemon's own
// user, and the members of group (normally SocketGroup): processes whose
// effective gid (SO_PEERCRED) or one of whose supplementary groups
// (/proc/PID/status Groups) is the group's. This holds whatever the
// socket file's mode is. Others get 403 with an Error explaining why, and
// a warning in the log. A peer whose credentials cannot be read is
// refused. procRoot is normally /proc.
//
// The group is looked up at each request, so it may be created after the
// daemon started; while it does not exist only root is answered.
func (s *Server) RequirePeerGroup(group, procRoot string) {
	self := os.Geteuid()
	s.authorize = func(w http.ResponseWriter, r *http.Request) bool {
		p, ok := r.Context().Value(peerKey{}).(peer)
		if !ok {
			s.log.Warn("api: refused a request whose peer credentials are unknown", "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "permission denied: gopulsed could not read your credentials (SO_PEERCRED)")
			return false
		}
		if p.uid == 0 || p.uid == self {
			return true
		}
		gid, gerr := lookupGID(group)
		if gerr == nil {
			if p.gid == gid {
				return true
			}
			if slices.Contains(peerGroups(procRoot, p), gid) {
				return true
			}
		}
		name := strconv.Itoa(p.uid)
		if u, err := user.LookupId(name); err == nil {
			name = fmt.Sprintf("%d (%s)", p.uid, u.Username)
		}
		msg := fmt.Sprintf("permission denied: uid %s is neither root nor a member of group %s; "+
			"an administrator can add the user with: usermod -aG %s USER (effective at the next login)", name, group, group)
		if gerr != nil {
			msg = fmt.Sprintf("permission denied: uid %s is not root, and group %s does not exist on this host, so only root may query gopulsed", name, group)
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "group", group}
		attrs = append(attrs, peerAttrs(r.Context())...)
		s.log.Warn("api: refused a peer that is neither root nor in the socket's group", attrs...)
		writeError(w, http.StatusForbidden, msg)
		return false
	}
}

func lookupGID(group string) (int, error) {
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// peerGroups returns the peer process's supplementary groups, from
// /proc/PID/status; if the process is gone (or not visible from our PID
// namespace), the groups the user database gives its uid (getgrouplist).
func peerGroups(procRoot string, p peer) []int {
	if p.pid > 0 {
		if gs, err := procGroups(filepath.Join(procRoot, strconv.Itoa(p.pid), "status"), p.uid); err == nil {
			return gs
		}
	}
	u, err := user.LookupId(strconv.Itoa(p.uid))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var out []int
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// procGroups reads the Groups line of a /proc/PID/status, checking that
// the process there still has the peer's uid (the pid may have been
// reused).
func procGroups(path string, uid int) ([]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var groups []int
	uidOK, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "Uid":
			// real, effective, saved, filesystem: SO_PEERCRED has the
			// effective uid.
			if fs := strings.Fields(v); len(fs) > 1 && fs[1] == strconv.Itoa(uid) {
				uidOK = true
			}
		case "Groups":
			found = true
			for _, g := range strings.Fields(v) {
				if n, err := strconv.Atoi(g); err == nil {
					groups = append(groups, n)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !found || !uidOK {
		return nil, fmt.Errorf("%s: not the peer's process", path)
	}
	return groups, nil
}
