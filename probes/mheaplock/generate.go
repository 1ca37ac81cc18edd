package mheaplock

//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -I../../bpf" -target amd64,arm64 -type lock_proc -type lock_contract -type hist_contract mheaplock ../../bpf/mheaplock.bpf.c
