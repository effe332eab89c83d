//! `framehub top`: the dashboard's live view in a terminal (ratatui +
//! crossterm), from a running daemon's `/api/overview` polled once a
//! second: listeners, nodes with their rate history, the open connections
//! (sortable, filterable), sinks, and the latest closed connections.
//!
//! The poller runs on a thread of its own, so a slow or gone daemon never
//! freezes the keyboard; the screen says when the figures are stale.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use crate::admin::ConnectionView;
use crate::admin::dashboard::Overview;

/// Arguments of `framehub top`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The daemon's admin address.
    #[arg(long, default_value = "127.0.0.1:30051")]
    pub admin: SocketAddr,
    /// Print one screen as plain text and exit (for scripts and tests).
    #[arg(long)]
    pub once: bool,
    /// Width and height of the `--once` screen.
    #[arg(long, default_value = "120x40", value_parser = parse_size)]
    pub size: (u16, u16),
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s.split_once('x').ok_or("WIDTHxHEIGHT, e.g. 120x40")?;
    let n = |v: &str| v.parse::<u16>().map_err(|e| format!("{v}: {e}"));
    Ok((n(w)?.max(40), n(h)?.max(10)))
}

/// Samples of a rate kept per listener and node for the sparklines.
const HISTORY: usize = 40;
/// Longest response read from the admin server.
const MAX_RESPONSE: u64 = 32 << 20;

/// The admin token, from `FRAMEHUB_ADMIN_TOKEN`, as the daemon reads it.
fn admin_token() -> Option<String> {
    std::env::var(crate::config::ADMIN_TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// One GET of `/api/overview` over plain HTTP/1.1.
fn fetch(admin: SocketAddr, token: Option<&str>) -> anyhow::Result<Overview> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&admin, timeout)
        .with_context(|| format!("cannot connect to the admin server at {admin}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /api/overview HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    match status {
        "200" => {}
        "401" => bail!("the admin server needs its token: set FRAMEHUB_ADMIN_TOKEN"),
        other => bail!("GET /api/overview: HTTP {other}: {}", body.trim()),
    }
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).context("unexpected /api/overview document")
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("chunk end")?;
    }
}

/// What the screen shows and how.
struct View {
    admin: SocketAddr,
    latest: Option<Overview>,
    fetched: Option<Instant>,
    error: Option<String>,
    /// Rates per listener ("l:") and node ("n:"), newest last.
    history: HashMap<String, VecDeque<f64>>,
    last_seq: Option<u64>,
    sort: usize,
    descending: bool,
    filter: String,
    typing: bool,
}

/// Sort keys of the connection table (`s` cycles, `r` reverses).
const SORTS: &[&str] = &["id", "bytes_in", "frames_in", "idle", "node", "peer"];

impl View {
    fn new(admin: SocketAddr) -> View {
        View {
            admin,
            latest: None,
            fetched: None,
            error: None,
            history: HashMap::new(),
            last_seq: None,
            sort: 0,
            descending: false,
            filter: String::new(),
            typing: false,
        }
    }

    fn update(&mut self, result: anyhow::Result<Overview>) {
        match result {
            Ok(o) => {
                if self.last_seq != Some(o.seq) {
                    let mut push = |key: String, v: f64| {
                        let h = self.history.entry(key).or_default();
                        if h.len() == HISTORY {
                            h.pop_front();
                        }
                        h.push_back(v);
                    };
                    for l in &o.listeners {
                        push(format!("l:{}", l.name), l.frames_in_per_sec);
                    }
                    for n in &o.nodes {
                        push(format!("n:{}", n.name), n.frames_per_second);
                    }
                    self.last_seq = Some(o.seq);
                }
                self.latest = Some(o);
                self.fetched = Some(Instant::now());
                self.error = None;
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    /// Handles one key; `false` to quit.
    fn key(&mut self, code: KeyCode) -> bool {
        if self.typing {
            match code {
                KeyCode::Enter | KeyCode::Esc => self.typing = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('s') => self.sort = (self.sort + 1) % SORTS.len(),
            KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Char('/') => {
                self.typing = true;
                self.filter.clear();
            }
            _ => {}
        }
        true
    }

    fn sparkline(&self, key: &str) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let Some(h) = self.history.get(key) else {
            return String::new();
        };
        let max = h.iter().copied().fold(0.0_f64, f64::max);
        h.iter()
            .rev()
            .take(16)
            .rev()
            .map(|&v| {
                if max <= 0.0 {
                    BARS[0]
                } else {
                    BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
                }
            })
            .collect()
    }

    fn connections<'a>(&self, o: &'a Overview) -> Vec<&'a ConnectionView> {
        let f = self.filter.to_lowercase();
        let mut rows: Vec<&ConnectionView> = o
            .connections
            .iter()
            .filter(|c| {
                f.is_empty()
                    || c.peer.to_string().contains(&f)
                    || c.listener.to_lowercase().contains(&f)
                    || c.node
                        .as_deref()
                        .is_some_and(|n| n.to_lowercase().contains(&f))
            })
            .collect();
        match SORTS[self.sort] {
            "bytes_in" => rows.sort_by_key(|c| c.bytes_in),
            "frames_in" => rows.sort_by_key(|c| c.frames_in),
            "idle" => rows.sort_by(|a, b| a.idle_seconds.total_cmp(&b.idle_seconds)),
            "node" => rows.sort_by(|a, b| a.node.cmp(&b.node)),
            "peer" => rows.sort_by_key(|c| c.peer),
            _ => rows.sort_by_key(|c| c.id),
        }
        if self.descending {
            rows.reverse();
        }
        rows
    }

    fn draw(&self, frame: &mut ratatui::Frame) {
        let area = frame.area();
        let [head, listeners, middle, conns, closed, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(
                self.latest
                    .as_ref()
                    .map_or(3, |o| o.listeners.len() as u16 + 3),
            ),
            Constraint::Min(5),
            Constraint::Min(5),
            Constraint::Length(8),
            Constraint::Length(1),
        ])
        .areas(area);
        frame.render_widget(Paragraph::new(self.header()), head);
        let help_text = if self.typing {
            format!("filter: {}▏ (Enter to keep, Esc to end)", self.filter)
        } else {
            "q quit · s sort · r reverse · / filter connections".to_owned()
        };
        frame.render_widget(
            Paragraph::new(help_text).style(Style::new().add_modifier(Modifier::DIM)),
            help,
        );
        let Some(o) = &self.latest else {
            return;
        };
        self.draw_listeners(frame, o, listeners);
        let [nodes, sinks] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(middle);
        self.draw_nodes(frame, o, nodes);
        draw_sinks(frame, o, sinks);
        self.draw_connections(frame, o, conns);
        draw_closed(frame, o, closed);
    }

    fn header(&self) -> Line<'static> {
        let mut text = format!("framehub top · {}", self.admin);
        if let Some(o) = &self.latest {
            text.push_str(&format!(
                " · v{} · up {} · period {}",
                o.version,
                duration(o.uptime_seconds),
                o.seq
            ));
        }
        match (&self.error, self.fetched) {
            (Some(e), Some(at)) => {
                text.push_str(&format!(" · STALE {:.0}s: {e}", at.elapsed().as_secs_f64()))
            }
            (Some(e), None) => text.push_str(&format!(" · {e}")),
            _ => {}
        }
        let style = if self.error.is_some() {
            Style::new().fg(Color::Red)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        Line::styled(text, style)
    }

    fn draw_listeners(&self, frame: &mut ratatui::Frame, o: &Overview, area: Rect) {
        let rows = o.listeners.iter().map(|l| {
            let drops: u64 = l.dropped_total.values().sum();
            Row::new(vec![
                Cell::from(l.name.clone()),
                Cell::from(l.connections_open.to_string()),
                Cell::from(rate(l.frames_in_per_sec)),
                Cell::from(format!("{}/s", bytes(l.bytes_in_per_sec))),
                Cell::from(rate(l.frames_out_per_sec)),
                Cell::from(format!("{}/s", bytes(l.bytes_out_per_sec))),
                Cell::from(self.sparkline(&format!("l:{}", l.name))),
                Cell::from(l.frames_received_total.to_string()),
                Cell::from(drops.to_string()),
            ])
        });
        let table = Table::new(
            rows,
            [
                Constraint::Min(10),
                Constraint::Length(6),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(17),
                Constraint::Length(12),
                Constraint::Length(8),
            ],
        )
        .header(header_row(&[
            "listener", "conns", "frames/s", "in", "out f/s", "out", "history", "frames", "drops",
        ]))
        .block(block("Listeners"));
        frame.render_widget(table, area);
    }

    fn draw_nodes(&self, frame: &mut ratatui::Frame, o: &Overview, area: Rect) {
        let rows = o.nodes.iter().map(|n| {
            let state = if n.connected {
                Cell::from("up").style(Style::new().fg(Color::Green))
            } else {
                Cell::from("gone").style(Style::new().fg(Color::Red))
            };
            Row::new(vec![
                Cell::from(n.name.clone()),
                state,
                Cell::from(rate(n.frames_per_second)),
                Cell::from(self.sparkline(&format!("n:{}", n.name))),
                Cell::from(n.frames.to_string()),
                Cell::from(n.queue_depth.to_string()),
                Cell::from(n.dropped.to_string()),
            ])
        });
        let title = format!("Nodes ({})", o.nodes_total);
        let table = Table::new(
            rows,
            [
                Constraint::Min(10),
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(17),
                Constraint::Length(10),
                Constraint::Length(6),
                Constraint::Length(8),
            ],
        )
        .header(header_row(&[
            "node", "state", "frames/s", "history", "frames", "queue", "dropped",
        ]))
        .block(block(&title));
        frame.render_widget(table, area);
    }

    fn draw_connections(&self, frame: &mut ratatui::Frame, o: &Overview, area: Rect) {
        let shown = self.connections(o);
        let rows = shown.iter().map(|c| {
            Row::new(vec![
                Cell::from(c.id.to_string()),
                Cell::from(c.listener.clone()),
                Cell::from(c.peer.to_string()),
                Cell::from(c.node.clone().unwrap_or_else(|| "-".to_owned())),
                Cell::from(c.frames_in.to_string()),
                Cell::from(bytes(c.bytes_in as f64)),
                Cell::from(c.frames_out.to_string()),
                Cell::from(c.dropped.to_string()),
                Cell::from(duration(c.idle_seconds)),
            ])
        });
        let title = format!(
            "Connections ({} open{}) sorted by {}{}",
            o.connections_total,
            if self.filter.is_empty() {
                String::new()
            } else {
                format!(", {} match {:?}", shown.len(), self.filter)
            },
            SORTS[self.sort],
            if self.descending { " ↓" } else { " ↑" }
        );
        let table = Table::new(
            rows,
            [
                Constraint::Length(6),
                Constraint::Length(10),
                Constraint::Length(22),
                Constraint::Min(8),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(header_row(&[
            "id", "listener", "peer", "node", "frames", "bytes", "out", "dropped", "idle",
        ]))
        .block(block(&title));
        frame.render_widget(table, area);
    }
}

fn draw_sinks(frame: &mut ratatui::Frame, o: &Overview, area: Rect) {
    let rows = o.sinks.iter().map(|s| {
        let state = match &s.error {
            None => Cell::from("up").style(Style::new().fg(Color::Green)),
            Some(_) => Cell::from("DOWN").style(Style::new().fg(Color::Red)),
        };
        Row::new(vec![
            Cell::from(format!("{} ({})", s.name, s.kind)),
            state,
            Cell::from(s.records_written.to_string()),
            Cell::from(s.records_failed.to_string()),
            Cell::from(s.records_lost.to_string()),
        ])
    });
    let title = format!("Sinks (queue {}/{})", o.sink_queue.0, o.sink_queue.1);
    let table = Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(5),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(7),
        ],
    )
    .header(header_row(&["sink", "state", "written", "failed", "lost"]))
    .block(block(&title));
    frame.render_widget(table, area);
}

fn draw_closed(frame: &mut ratatui::Frame, o: &Overview, area: Rect) {
    let rows = o.closed.iter().map(|c| {
        let style = if c.reason == "peer_closed" || c.reason == "shutdown" {
            Style::new()
        } else {
            Style::new().fg(Color::Yellow)
        };
        Row::new(vec![
            Cell::from(c.id.to_string()),
            Cell::from(c.peer.to_string()),
            Cell::from(c.node.clone().unwrap_or_else(|| "-".to_owned())),
            Cell::from(c.reason.clone()).style(style),
            Cell::from(duration(c.duration_seconds)),
            Cell::from(c.frames_in.to_string()),
            Cell::from(bytes(c.bytes_in as f64)),
        ])
    });
    let title = format!("Recently closed ({} remembered)", o.closed_total);
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(22),
            Constraint::Min(8),
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(header_row(&[
        "id", "peer", "node", "reason", "lasted", "frames", "bytes",
    ]))
    .block(block(&title));
    frame.render_widget(table, area);
}

fn block(title: &str) -> Block<'static> {
    Block::new().borders(Borders::ALL).title(title.to_owned())
}

fn header_row(names: &[&'static str]) -> Row<'static> {
    Row::new(names.to_vec()).style(Style::new().add_modifier(Modifier::BOLD))
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn bytes(mut v: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn duration(s: f64) -> String {
    match s {
        s if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1}s"),
        s if s < 7200.0 => format!("{:.0}m", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1}d", s / 86400.0),
    }
}

/// Runs `framehub top`.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let token = admin_token();
    let mut view = View::new(args.admin);
    if args.once {
        view.update(fetch(args.admin, token.as_deref()));
        if let Some(e) = &view.error {
            bail!("{e}");
        }
        let (w, h) = args.size;
        let mut terminal = Terminal::new(TestBackend::new(w, h))?;
        terminal.draw(|f| view.draw(f))?;
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        print!("{out}");
        return Ok(());
    }
    // The poller: one fetch a second, results to the screen loop.
    let (tx, rx) = mpsc::sync_channel(1);
    let admin = args.admin;
    std::thread::Builder::new()
        .name("framehub-top-poll".to_owned())
        .spawn(move || {
            loop {
                let started = Instant::now();
                if tx.send(fetch(admin, token.as_deref())).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
        })?;
    enable_raw_mode()?;
    let mut stdout = std::io::stdout();
    execute!(stdout, EnterAlternateScreen)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout))?;
    let result = screen_loop(&mut terminal, &mut view, &rx);
    // The terminal is given back whatever happened.
    let _ = disable_raw_mode();
    let _ = execute!(terminal.backend_mut(), LeaveAlternateScreen);
    let _ = terminal.show_cursor();
    result
}

fn screen_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    view: &mut View,
    rx: &mpsc::Receiver<anyhow::Result<Overview>>,
) -> anyhow::Result<()> {
    loop {
        while let Ok(result) = rx.try_recv() {
            view.update(result);
        }
        terminal.draw(|f| view.draw(f))?;
        if event::poll(Duration::from_millis(200))?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
            && !view.key(key.code)
        {
            return Ok(());
        }
    }
}
