package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gdamore/tcell/v2"

	"github.com/gopulse/gopulse/probes/sanitize"
)

// topUI is the live full-screen view of top (tcell: terminfo, resize and
// key decoding are the library's, so it works in any terminal, over ssh
// and in tmux).
type topUI struct {
	scr     tcell.Screen
	sampler *topSampler
	view    topView

	figs     []figures
	shown    []figures
	at       time.Time
	err      error
	selPID   int  // the selected process, kept across refreshes and sorts
	sel      int  // its row
	top      int  // first row shown
	detail   bool // full-screen detail of the selected process
	editing  bool // typing a filter
	editText string
}

var (
	styleNormal = tcell.StyleDefault
	styleHeader = tcell.StyleDefault.Reverse(true)
	styleSel    = tcell.StyleDefault.Reverse(true).Bold(true)
	styleTitle  = tcell.StyleDefault.Bold(true)
	styleDim    = tcell.StyleDefault.Dim(true)
)

// runTopUI runs the live view until q (or an interrupt).
func runTopUI(ctx context.Context, s *topSampler, v topView, delay time.Duration) error {
	scr, err := tcell.NewScreen()
	if err != nil {
		return fmt.Errorf("top needs a terminal (-b for plain output): %w", err)
	}
	if err := scr.Init(); err != nil {
		return fmt.Errorf("top needs a terminal (-b for plain output): %w", err)
	}
	defer scr.Fini()
	ui := &topUI{scr: scr, sampler: s, view: v}

	events := make(chan tcell.Event, 16)
	quit := make(chan struct{})
	defer close(quit)
	go scr.ChannelEvents(events, quit)

	type result struct {
		figs []figures
		at   time.Time
		err  error
	}
	results := make(chan result, 1)
	fetch := func() {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		figs, err := s.sample(fctx)
		results <- result{figs, s.prevAt, err}
	}
	go fetch()
	fetching := true
	tick := time.NewTicker(delay)
	defer tick.Stop()
	ui.draw()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-results:
			fetching = false
			if r.err != nil {
				ui.err = r.err
			} else {
				ui.err, ui.figs, ui.at = nil, r.figs, r.at
			}
			ui.refresh()
			ui.draw()
		case <-tick.C:
			if !fetching { // a slow daemon delays refreshes, never piles them
				fetching = true
				go fetch()
			}
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			switch ev := ev.(type) {
			case *tcell.EventResize:
				scr.Sync()
			case *tcell.EventKey:
				if ui.key(ev) {
					return nil
				}
			}
			ui.draw()
		}
	}
}

// refresh applies the view and keeps the selection on its process.
func (ui *topUI) refresh() {
	ui.shown = ui.view.apply(ui.figs)
	ui.sel = 0
	for i := range ui.shown {
		if ui.shown[i].p.PID == ui.selPID {
			ui.sel = i
		}
	}
	if len(ui.shown) > 0 {
		ui.selPID = ui.shown[ui.sel].p.PID
	}
}

// key handles a key; it reports whether to quit.
func (ui *topUI) key(ev *tcell.EventKey) bool {
	if ui.editing {
		switch ev.Key() {
		case tcell.KeyEnter:
			ui.editing, ui.view.filter = false, ui.editText
		case tcell.KeyEscape:
			ui.editing = false
		case tcell.KeyBackspace, tcell.KeyBackspace2:
			if r := []rune(ui.editText); len(r) > 0 {
				ui.editText = string(r[:len(r)-1])
			}
		case tcell.KeyRune:
			if len(ui.editText) < 64 {
				ui.editText += string(ev.Rune())
			}
		case tcell.KeyCtrlC:
			return true
		}
		ui.refresh()
		return false
	}
	switch ev.Key() {
	case tcell.KeyCtrlC:
		return true
	case tcell.KeyEscape:
		ui.detail = false
	case tcell.KeyEnter:
		ui.detail = !ui.detail && len(ui.shown) > 0
	case tcell.KeyUp:
		ui.move(-1)
	case tcell.KeyDown:
		ui.move(1)
	case tcell.KeyPgUp:
		ui.move(-10)
	case tcell.KeyPgDn:
		ui.move(10)
	case tcell.KeyLeft:
		ui.view.sortCol = (ui.view.sortCol + len(topColumns) - 1) % len(topColumns)
	case tcell.KeyRight:
		ui.view.sortCol = (ui.view.sortCol + 1) % len(topColumns)
	case tcell.KeyRune:
		switch ev.Rune() {
		case 'q', 'Q':
			return true
		case 'k':
			ui.move(-1)
		case 'j':
			ui.move(1)
		case '<', ',':
			ui.view.sortCol = (ui.view.sortCol + len(topColumns) - 1) % len(topColumns)
		case '>', '.', 's':
			ui.view.sortCol = (ui.view.sortCol + 1) % len(topColumns)
		case 'r':
			ui.view.desc = !ui.view.desc
		case '/':
			ui.editing, ui.editText = true, ui.view.filter
		case 'a':
			ui.view.all = !ui.view.all
			ui.sampler.all.Store(ui.view.all)
		}
	}
	ui.refresh()
	return false
}

func (ui *topUI) move(d int) {
	if len(ui.shown) == 0 {
		return
	}
	ui.sel = max(0, min(len(ui.shown)-1, ui.sel+d))
	ui.selPID = ui.shown[ui.sel].p.PID
}

// put writes s at (x, y), cut to the screen's width.
func (ui *topUI) put(x, y int, s string, st tcell.Style) {
	w, _ := ui.scr.Size()
	// Drawn past the output Writer: escaped here (a filter typed, a name).
	for _, r := range sanitize.String(s, 4*w+16) {
		if x >= w {
			return
		}
		ui.scr.SetContent(x, y, r, nil, st)
		x++
	}
}

func (ui *topUI) fillLine(y int, st tcell.Style) {
	w, _ := ui.scr.Size()
	for x := 0; x < w; x++ {
		ui.scr.SetContent(x, y, ' ', nil, st)
	}
}

func (ui *topUI) draw() {
	scr := ui.scr
	scr.Clear()
	w, h := scr.Size()
	if w < 20 || h < 5 {
		ui.put(0, 0, "window too small", styleNormal)
		scr.Show()
		return
	}
	at := ui.at
	if at.IsZero() {
		at = time.Now()
	}
	ui.put(0, 0, topTitle(at, len(ui.shown), len(ui.figs), &ui.view, ui.sampler.window), styleTitle)
	help := "q quit  ↑↓ select  enter detail  ←→/<> sort  r reverse  / filter  a exited"
	switch {
	case ui.editing:
		help = "filter (PID, exe or service; enter to apply, esc to cancel): " + ui.editText + "_"
	case ui.err != nil:
		help = "error: " + ui.err.Error()
	}
	ui.put(0, 1, help, styleDim)
	if ui.detail && ui.sel < len(ui.shown) {
		ui.drawDetail(&ui.shown[ui.sel], 3, h-3)
		scr.Show()
		return
	}

	// Rows, then (if there is room) the selected process's sparklines.
	pane := 0
	if h >= 16 && len(ui.shown) > 0 {
		pane = 5
	}
	rows := h - 3 - pane
	widths := make([]int, len(topColumns))
	cells := make([][]string, len(ui.shown))
	for j, c := range topColumns {
		widths[j] = len(c.name)
	}
	for i := range ui.shown {
		cells[i] = make([]string, len(topColumns))
		for j, c := range topColumns {
			cells[i][j] = c.cell(&ui.shown[i])
			widths[j] = max(widths[j], len([]rune(cells[i][j])))
		}
	}
	line := func(vals []string) string {
		var b strings.Builder
		for j, v := range vals {
			if j > 0 {
				b.WriteString("  ")
			}
			pad := widths[j] - len([]rune(v))
			if j == 1 || j == len(vals)-1 { // text columns left-aligned
				b.WriteString(v + strings.Repeat(" ", pad))
			} else {
				b.WriteString(strings.Repeat(" ", pad) + v)
			}
		}
		return b.String()
	}
	hdr := make([]string, len(topColumns))
	for j, c := range topColumns {
		hdr[j] = c.name
		if j == ui.view.sortCol {
			if ui.view.desc {
				hdr[j] += "↓"
			} else {
				hdr[j] += "↑"
			}
			widths[j] = max(widths[j], len([]rune(hdr[j])))
		}
	}
	ui.fillLine(2, styleHeader)
	ui.put(0, 2, line(hdr), styleHeader)
	if ui.sel < ui.top {
		ui.top = ui.sel
	}
	if ui.sel >= ui.top+rows {
		ui.top = ui.sel - rows + 1
	}
	if len(ui.shown) == 0 {
		ui.put(0, 3, "no Go process traced", styleNormal)
	}
	for i := ui.top; i < len(ui.shown) && i < ui.top+rows; i++ {
		st := styleNormal
		if i == ui.sel {
			st = styleSel
			ui.fillLine(3+i-ui.top, st)
		}
		ui.put(0, 3+i-ui.top, line(cells[i]), st)
	}
	if pane > 0 && ui.sel < len(ui.shown) {
		ui.drawSparks(&ui.shown[ui.sel], h-pane, w)
	}
	scr.Show()
}

// drawSparks draws the selected process's pauses and heap over the window.
func (ui *topUI) drawSparks(f *figures, y, w int) {
	ui.put(0, y, strings.Repeat("─", w), styleDim)
	ui.put(0, y+1, fmt.Sprintf("PID %d %s  %d cycles in %s, GC CPU ≈ %s", f.p.PID, exeName(f.p.Exe), int(f.cyclesInWindow), f.window.Round(time.Second), pct(f.gcCPU)), styleTitle)
	width := max(10, w-24)
	ui.put(0, y+2, fmt.Sprintf("pauses  max %-8s ", humanSeconds(f.pauseMax))+sparkline(f.pauses, width), styleNormal)
	peak := 0.0
	for _, v := range f.heaps {
		peak = max(peak, v)
	}
	ui.put(0, y+3, fmt.Sprintf("heap    max %-8s ", humanBytes(uint64(peak)))+sparkline(f.heaps, width), styleNormal)
}

// drawDetail is the full-screen view of one process.
func (ui *topUI) drawDetail(f *figures, y, rows int) {
	w, _ := ui.scr.Size()
	var lines []string
	var b strings.Builder
	_ = writeGC(&b, gcHeaderOnly(f), 0)
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		if l != "no GC cycle observed yet" {
			lines = append(lines, l)
		}
	}
	lines = append(lines, "")
	for _, c := range topColumns[2:] {
		lines = append(lines, fmt.Sprintf("  %-16s %s", c.name, c.cell(f)))
	}
	lines = append(lines, "")
	width := max(10, w-24)
	lines = append(lines, fmt.Sprintf("pauses  max %-8s ", humanSeconds(f.pauseMax))+sparkline(f.pauses, width))
	peak := 0.0
	for _, v := range f.heaps {
		peak = max(peak, v)
	}
	lines = append(lines, fmt.Sprintf("heap    max %-8s ", humanBytes(uint64(peak)))+sparkline(f.heaps, width))
	lines = append(lines, "", "esc or enter: back to the list")
	for i, l := range lines {
		if i >= rows {
			break
		}
		ui.put(0, y+i, l, styleNormal)
	}
}
