package discovery

//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -I../../bpf" -target amd64,arm64 -type disc_event -type disc_contract -type disc_event_kind -type gp_share -type share_contract disc ../../bpf/discovery.bpf.c
