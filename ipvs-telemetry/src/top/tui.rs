//! The interactive `top` (ratatui on crossterm): the frame of [`super::frame`] as a table,
//! refreshed every `--delay`, services collapsed into one row until expanded.
//!
//! Keys: `s`/`S` next/previous sort column, `/` filter (type, Enter applies, Esc drops it),
//! space pauses and resumes, Up/Down (`k`/`j`) select a service, Enter (or `e`) expands or
//! collapses it, `q` (or Esc, or Ctrl-C) quits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TRow, Table, TableState};

use super::{Row, SortKey, client::Client, fetch, frame, ms, rows};
use crate::cli::TopOpts;

/// What the view shows and how.
struct View {
    groups: Vec<(Row, Vec<Row>)>,
    ebpf: bool,
    sort: SortKey,
    filter: String,
    /// The filter being typed (`/` … Enter).
    editing: Option<String>,
    paused: bool,
    /// Expanded services: (netns, service id).
    expanded: HashSet<(String, String)>,
    /// Selected service (netns, service id).
    selected: Option<(String, String)>,
    error: Option<String>,
    /// Namespaces that could not be read (`NAME: MESSAGE`).
    unreadable: Vec<String>,
    quit: bool,
}

impl View {
    /// The visible rows: services, and the destinations of expanded ones.
    fn visible(&self) -> Vec<Row> {
        frame(self.groups.clone(), self.sort, &self.filter)
            .into_iter()
            .filter(|r| {
                r.destination.is_none()
                    || self
                        .expanded
                        .contains(&(r.netns.clone(), r.service.clone()))
            })
            .collect()
    }

    fn services(&self) -> Vec<(String, String)> {
        self.visible()
            .into_iter()
            .filter(|r| r.destination.is_none())
            .map(|r| (r.netns, r.service))
            .collect()
    }

    fn cycle_sort(&mut self, forward: bool) {
        let all = SortKey::value_variants();
        let i = all.iter().position(|k| *k == self.sort).unwrap_or(0);
        let n = all.len();
        self.sort = all[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }];
    }

    fn move_selection(&mut self, down: bool) {
        let s = self.services();
        if s.is_empty() {
            self.selected = None;
            return;
        }
        let i = self
            .selected
            .as_ref()
            .and_then(|sel| s.iter().position(|x| x == sel));
        let next = match (i, down) {
            (None, _) => 0,
            (Some(i), true) => (i + 1).min(s.len() - 1),
            (Some(i), false) => i.saturating_sub(1),
        };
        self.selected = Some(s[next].clone());
    }

    fn key(&mut self, code: KeyCode, mods: KeyModifiers) {
        if let Some(text) = &mut self.editing {
            match code {
                KeyCode::Enter => {
                    self.filter = std::mem::take(text);
                    self.editing = None;
                }
                KeyCode::Esc => {
                    self.editing = None;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return;
        }
        match code {
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('s') => self.cycle_sort(true),
            KeyCode::Char('S') => self.cycle_sort(false),
            KeyCode::Char('/') => self.editing = Some(String::new()),
            KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(true),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(false),
            KeyCode::Enter | KeyCode::Char('e') => {
                if self.selected.is_none() {
                    self.move_selection(true);
                }
                if let Some(s) = self.selected.clone()
                    && !self.expanded.remove(&s)
                {
                    self.expanded.insert(s);
                }
            }
            _ => {}
        }
    }
}

const HEADERS: [&str; 12] = [
    "NETNS",
    "SERVICE / DESTINATION",
    "WEIGHT",
    "ACTIVE",
    "INACTIVE",
    "CONN/S",
    "BYTES/S",
    "P50(ms)",
    "P99(ms)",
    "P99.9(ms)",
    "UNANS",
    "NAME",
];

fn cells(r: &Row, expanded: bool) -> Vec<String> {
    let q = r.first_response_seconds.as_ref();
    vec![
        if r.destination.is_none() {
            r.netns.clone()
        } else {
            String::new()
        },
        match &r.destination {
            None => format!("{} {}", if expanded { "-" } else { "+" }, r.service),
            Some(d) => format!("   -> {d}"),
        },
        r.weight.map(|w| w.to_string()).unwrap_or_default(),
        r.active_connections.to_string(),
        r.inactive_connections.to_string(),
        format!(
            "{}{:.1}",
            if r.rate_source == "ebpf" { "" } else { "~" },
            r.new_connections_per_second
        ),
        super::human(r.bytes_per_second),
        ms(q, |q| q.p50),
        ms(q, |q| q.p99),
        ms(q, |q| q.p999),
        r.unanswered.to_string(),
        r.names.clone(),
    ]
}

fn draw(f: &mut Frame, v: &View, from: &str) {
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let status = format!(
        "ipvs-telemetry top - {from} - eBPF {} - sort {:?}{}{}{}",
        if v.ebpf { "on" } else { "off (~ estimator)" },
        v.sort,
        if v.filter.is_empty() {
            String::new()
        } else {
            format!(" - filter {:?}", v.filter)
        },
        if v.paused { " - PAUSED" } else { "" },
        v.error
            .as_ref()
            .map(|e| format!(" - error: {e}"))
            .or_else(|| {
                (!v.unreadable.is_empty())
                    .then(|| format!(" - unreadable: {}", v.unreadable.join("; ")))
            })
            .unwrap_or_default(),
    );
    f.render_widget(Paragraph::new(Line::from(status)), top);
    let rows = v.visible();
    let mut state = TableState::default();
    state.select(rows.iter().position(|r| {
        r.destination.is_none()
            && v.selected.as_ref() == Some(&(r.netns.clone(), r.service.clone()))
    }));
    let table = Table::new(
        rows.iter().map(|r| {
            let open = v.expanded.contains(&(r.netns.clone(), r.service.clone()));
            TRow::new(cells(r, open).into_iter().map(Cell::from))
        }),
        [
            Constraint::Length(10),
            Constraint::Length(30),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Min(4),
        ],
    )
    .header(TRow::new(HEADERS).style(Style::new().add_modifier(Modifier::REVERSED)))
    .row_highlight_style(Style::new().add_modifier(Modifier::BOLD))
    .highlight_symbol(">");
    f.render_stateful_widget(table, body, &mut state);
    let help = match &v.editing {
        Some(t) => format!("filter: {t}_  (Enter apply, Esc clear)"),
        None => "q quit  s/S sort  / filter  space pause  up/down select  Enter expand".into(),
    };
    f.render_widget(Paragraph::new(Line::from(help)), bottom);
}

/// Runs the interactive view until `q`; `Err` is one line (a terminal failure).
pub(super) fn run(
    client: &Client,
    opts: &TopOpts,
    rt: &tokio::runtime::Runtime,
) -> Result<(), String> {
    let mut v = View {
        groups: Vec::new(),
        ebpf: false,
        sort: opts.sort,
        filter: opts.filter.clone(),
        editing: None,
        paused: false,
        expanded: HashSet::new(),
        selected: None,
        error: None,
        unreadable: Vec::new(),
        quit: false,
    };
    let mut terminal =
        ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut next = Instant::now();
    let result = loop {
        if !v.paused && Instant::now() >= next {
            match rt.block_on(fetch(client, opts.netns_filter.as_deref())) {
                Ok((snap, win)) => {
                    v.ebpf = win.ebpf;
                    v.groups = rows(&snap, &win);
                    v.unreadable = super::unreadable(&snap);
                    v.error = None;
                }
                Err(e) => v.error = Some(e),
            }
            next = Instant::now() + opts.delay.max(Duration::from_millis(100));
        }
        if let Err(e) = terminal.draw(|f| draw(f, &v, &opts.from)) {
            break Err(format!("drawing failed: {e}"));
        }
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => v.key(k.code, k.modifiers),
                Ok(_) => {}
                Err(e) => break Err(format!("reading the terminal failed: {e}")),
            },
            Ok(false) => {}
            Err(e) => break Err(format!("reading the terminal failed: {e}")),
        }
        if v.quit {
            break Ok(());
        }
    };
    ratatui::restore();
    result
}
