//! Drawing the UI: the panels, the key line, and the overlays (help, a SPEC's details,
//! the vacuum confirmation). Reads the app's state; changes nothing but the list's scroll
//! position.

use super::*;

impl App {
    pub(super) fn draw(&self, frame: &mut Frame) {
        // A small terminal gives the SPEC list the room: the other panels shrink first.
        let (top_rows, bottom_rows) = if frame.area().height < 34 {
            (8, 6)
        } else {
            (12, 10)
        };
        let [top, middle, bottom, keys] = Layout::vertical([
            Constraint::Length(top_rows),
            Constraint::Min(6),
            Constraint::Length(bottom_rows),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let [policy, schedule] =
            Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(top);
        let [jobs, spawn] =
            Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)])
                .areas(bottom);
        self.draw_policy(frame, policy);
        self.draw_schedule(frame, schedule);
        self.draw_evidence(frame, middle);
        self.draw_jobs(frame, jobs);
        self.draw_spawn(frame, spawn);
        let mut line = Vec::new();
        for (key, what) in [
            ("?", "keys"),
            ("v", "vacuum"),
            ("c", "dry run"),
            ("q", "quit"),
        ] {
            line.push(Span::styled(format!(" {key} "), key_style()));
            line.push(Span::raw(format!(" {what}  ")));
        }
        line.push(Span::styled(
            self.status.clone(),
            Style::new().fg(Color::Cyan),
        ));
        frame.render_widget(Paragraph::new(Line::from(line)), keys);
        match self.overlay {
            Overlay::None => {}
            Overlay::Help => self.draw_help(frame),
            Overlay::Details => self.draw_details(frame),
            Overlay::ConfirmVacuum => self.draw_confirm_vacuum(frame),
        }
    }

    fn draw_help(&self, frame: &mut Frame) {
        let keys = [
            ("Up/Down, j/k", "select a SPEC"),
            ("PgUp/PgDn", "a page up or down"),
            ("Home/End, g/G", "first or last SPEC"),
            ("s", "sort SPECs: state, size, name"),
            ("Enter", "the selected SPEC's details"),
            ("c", "cleanup dry run (changes nothing)"),
            ("v", "vacuum the database (asks first)"),
            ("r", "reload the policy"),
            ("q, Esc", "quit (in a window: close it)"),
        ];
        let lines: Vec<Line> = keys
            .iter()
            .map(|(key, what)| {
                Line::from(vec![
                    Span::styled(format!("{key:<15}"), label_style()),
                    Span::raw(*what),
                ])
            })
            .collect();
        overlay(frame, " Keys (Esc closes) ", lines, 56);
    }

    fn draw_details(&self, frame: &mut Frame) {
        let Measured::Ready(report) = &self.evidence else {
            return;
        };
        let list = self.specs.borrow();
        let ordered = list.ordered(&report.specs);
        let Some(spec) = list.selected(&ordered) else {
            return;
        };
        let usage = |u: &speckit_retention::stats::Usage| {
            format!("{} in {} files", human_bytes(u.bytes), u.files)
        };
        let mut lines = vec![
            field(
                "verdict",
                format!(
                    "{} ({:.0}% of the limit, {} bytes of {})",
                    spec.verdict.as_str(),
                    spec.limit_fraction * 100.0,
                    spec.total.bytes,
                    report.limits.limit_bytes
                ),
            ),
            field("total", usage(&spec.total)),
            field("commands", usage(&spec.commands)),
            field("consensus", usage(&spec.consensus)),
        ];
        if spec.unreadable_entries > 0 {
            lines.push(Line::styled(
                format!(
                    "{} entries could not be read: the figures are lower bounds",
                    spec.unreadable_entries
                ),
                Style::new().fg(Color::Yellow),
            ));
        }
        lines.push(Line::styled("folders", label_style()));
        for f in &spec.folders {
            lines.push(Line::raw(format!(
                "  {}: commands {}, consensus {}",
                f.folder,
                usage(&f.commands),
                usage(&f.consensus)
            )));
        }
        overlay(frame, &format!(" {} (Esc closes) ", spec.spec), lines, 72);
    }

    fn draw_confirm_vacuum(&self, frame: &mut Frame) {
        let lines = vec![
            Line::raw("Vacuum the database now?"),
            Line::raw(format!(
                "It changes {} (an incremental vacuum).",
                self.engine.database_path().display()
            )),
            Line::raw(""),
            Line::from(vec![
                Span::styled(" y ", key_style()),
                Span::raw(" vacuum   "),
                Span::styled(" n ", key_style()),
                Span::raw(" cancel"),
            ]),
        ];
        overlay(frame, " Vacuum? ", lines, 64);
    }

    fn draw_policy(&self, frame: &mut Frame, area: Rect) {
        let p = &self.policy.policy;
        // Room for a value after its 10-column label, inside the borders.
        let width = (area.width as usize).saturating_sub(12);
        let mut lines = vec![
            field("config", left_truncate(&self.policy.source.path, width)),
            field(
                "database",
                left_truncate(self.engine.database_path(), width),
            ),
            Line::from(vec![
                Span::styled(format!("{:<10}", "loaded"), label_style()),
                Span::raw(format!(
                    "{} ",
                    self.policy.loaded_at.format("%Y-%m-%d %H:%M:%S UTC")
                )),
                Span::styled(
                    format!("({})", self.reload.applied),
                    Style::new().fg(Color::Green),
                ),
            ]),
            field(
                "limits",
                format!(
                    "warn {} MiB, limit {} MiB per SPEC",
                    p.section::<EvidencePolicy>().warn_mb,
                    p.section::<EvidencePolicy>().limit_mb
                ),
            ),
            field(
                "evidence",
                left_truncate(&p.section::<EvidencePolicy>().root, width),
            ),
            field(
                "retention",
                format!(
                    "archive after {} d, purge after {} d; active: {}",
                    p.section::<RetentionPolicy>().archive_after_days,
                    p.section::<RetentionPolicy>().purge_after_days,
                    p.section::<RetentionPolicy>().active_statuses.join(", ")
                ),
            ),
            field(
                "vacuum",
                format!(
                    "at {:.0}% free pages, {} pages a chunk",
                    p.section::<VacuumPolicy>().free_fraction_threshold * 100.0,
                    p.section::<VacuumPolicy>().chunk_pages
                ),
            ),
        ];
        if let Some((at, error)) = &self.reload.rejected {
            lines.push(Line::from(vec![
                Span::styled(format!("{:<10}", "rejected"), label_style()),
                Span::styled(
                    format!("{} {error}", at.format("%H:%M:%S")),
                    Style::new().fg(Color::Red),
                ),
            ]));
        }
        let title = format!(" Policy in effect (generation {}) ", self.policy.generation);
        frame.render_widget(
            Paragraph::new(lines)
                .block(Block::bordered().title(title))
                .wrap(Wrap { trim: true }),
            area,
        );
    }

    fn draw_schedule(&self, frame: &mut Frame, area: Rect) {
        let now = self.engine.engine().clock().now();
        // Shown in the zone the expressions are read in, as the user wrote them.
        let tz = cron_expr::parse_timezone(&self.policy.policy.schedule.timezone)
            .unwrap_or(ScheduleTz::Utc);
        let mut lines: Vec<Line> = self
            .engine
            .next_runs()
            .into_iter()
            .map(|run| {
                let when = match run.next_at {
                    Some(at) => format!("{}  in {}", zoned(at, tz), human_duration(at - now)),
                    None => "never".into(),
                };
                let mut spans = vec![
                    Span::styled(format!("{:<16}", run.job), label_style()),
                    Span::raw(when),
                ];
                if !run.has_plugin {
                    spans.push(Span::styled(" (no plugin)", Style::new().fg(Color::Red)));
                }
                Line::from(spans)
            })
            .collect();
        if lines.is_empty() {
            lines.push(Line::raw("no job is scheduled"));
        }
        let title = format!(" Next runs ({}) ", self.policy.policy.schedule.timezone);
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(title)),
            area,
        );
    }

    fn draw_evidence(&self, frame: &mut Frame, area: Rect) {
        let p = &self.policy.policy.section::<EvidencePolicy>();
        let title = format!(
            " Evidence per SPEC (warn {} MiB, limit {} MiB) ",
            p.warn_mb, p.limit_mb
        );
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let report = match &self.evidence {
            Measured::Pending => {
                frame.render_widget(Paragraph::new("measuring..."), inner);
                return;
            }
            Measured::Failed(e) => {
                frame.render_widget(
                    Paragraph::new(format!("cannot measure evidence: {e}"))
                        .style(Style::new().fg(Color::Red))
                        .wrap(Wrap { trim: true }),
                    inner,
                );
                return;
            }
            Measured::Ready(report) => report,
        };
        let warning_rows = self.warnings.len().min(2) as u16;
        let [bars, summary] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1 + warning_rows)])
                .areas(inner);
        let limit = report.limits.limit_bytes.max(1) as f64;
        let mut list = self.specs.borrow_mut();
        let ordered = list.ordered(&report.specs);
        let window = list.window(&ordered, bars.height as usize);
        let selected = list.selected_index(&ordered);
        self.spec_rows.set(bars.height as usize);
        let shown = window.clone();
        for (row, index) in window.enumerate() {
            let spec = ordered[index];
            let area = Rect {
                y: bars.y + row as u16,
                height: 1,
                ..bars
            };
            let [name, bar] =
                Layout::horizontal([Constraint::Length(46), Constraint::Min(10)]).areas(area);
            let color = match spec.verdict.as_str() {
                "block" => Color::Red,
                "warn" => Color::Yellow,
                _ => Color::Green,
            };
            let (marker, style) = if index == selected {
                ("›", Style::new().add_modifier(Modifier::REVERSED))
            } else {
                (" ", Style::new())
            };
            frame.render_widget(
                Paragraph::new(format!(
                    "{marker}{:<23} {:>9} {:>5} files",
                    truncate(&spec.spec, 23),
                    human_bytes(spec.total.bytes),
                    spec.total.files
                ))
                .style(style),
                name,
            );
            frame.render_widget(
                LineGauge::default()
                    .ratio((spec.total.bytes as f64 / limit).clamp(0.0, 1.0))
                    .label(format!(
                        "{:>4.0}% {:<5}",
                        spec.limit_fraction * 100.0,
                        spec.verdict.as_str()
                    ))
                    .filled_symbol("█")
                    .unfilled_symbol("░")
                    .filled_style(Style::new().fg(color))
                    .unfilled_style(Style::new().fg(Color::DarkGray)),
                bar,
            );
        }
        let position = if ordered.is_empty() {
            "no SPEC".to_string()
        } else {
            format!(
                "{}-{} of {}, by {}",
                shown.start + 1,
                shown.end,
                ordered.len(),
                list.sort.label()
            )
        };
        let mut lines = vec![Line::raw(format!(
            "{position}: {} ok, {} warn, {} block{}",
            report.counts.ok,
            report.counts.warn,
            report.counts.block,
            report
                .root_total
                .map(|t| format!("; root {} in {} files", human_bytes(t.bytes), t.files))
                .unwrap_or_default(),
        ))];
        lines.extend(
            self.warnings
                .iter()
                .take(warning_rows as usize)
                .map(|w| Line::styled(w.clone(), Style::new().fg(Color::Yellow))),
        );
        frame.render_widget(Paragraph::new(lines), summary);
    }

    fn draw_jobs(&self, frame: &mut Frame, area: Rect) {
        let lines: Vec<Line> = self
            .jobs
            .iter()
            .map(|l| {
                let color = match l.outcome.as_str() {
                    "succeeded" => Color::Green,
                    "failed" => Color::Red,
                    "running" => Color::Cyan,
                    _ => Color::Yellow,
                };
                Line::from(vec![
                    Span::raw(format!(
                        "{} {:<15} {:<8} ",
                        l.at.map(|t| t.format("%H:%M:%S").to_string())
                            .unwrap_or_else(|| "--:--:--".into()),
                        truncate(&l.job, 15),
                        l.trigger
                    )),
                    Span::styled(format!("{:<9}", l.outcome), Style::new().fg(color)),
                    Span::raw(format!(
                        " {:>7}  {}",
                        l.duration_ms
                            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                            .unwrap_or_default(),
                        l.summary
                    )),
                ])
            })
            .collect();
        let body = if lines.is_empty() {
            vec![Line::raw("no job has run yet: press v or c")]
        } else {
            lines
        };
        frame.render_widget(
            Paragraph::new(body).block(Block::bordered().title(" Last job reports ")),
            area,
        );
    }

    fn draw_spawn(&self, frame: &mut Frame, area: Rect) {
        let mut lines = match &self.spawn {
            Measured::Pending => vec![Line::raw("reading...")],
            Measured::Failed(e) => vec![Line::styled(
                format!("cannot read spawn metrics: {e}"),
                Style::new().fg(Color::Red),
            )],
            Measured::Ready(stats) if stats.batches == 0 => {
                vec![Line::raw("no spawn batch recorded yet")]
            }
            Measured::Ready(stats) => {
                let mut lines = vec![Line::raw(format!(
                    "{} batches ({} ok), {} agents ({} ok)",
                    stats.batches, stats.batches_ok, stats.agents, stats.agents_ok
                ))];
                if let Some(p) = &stats.agent_spawn {
                    lines.push(field(
                        "agent",
                        format!("p50 {:.1} ms, p95 {:.1} ms", p.p50_ms, p.p95_ms),
                    ));
                }
                if let Some(p) = &stats.batch_total {
                    lines.push(field(
                        "batch",
                        format!("p50 {:.1} ms, p95 {:.1} ms", p.p50_ms, p.p95_ms),
                    ));
                }
                for c in stats.comparisons.iter().take(3) {
                    lines.push(Line::raw(format!(
                        "{} agents: parallel {:.1} ms vs sequential {:.1} ms (x{:.1})",
                        c.agents, c.parallel.p50_ms, c.sequential.p50_ms, c.speedup_p50
                    )));
                }
                lines
            }
        };
        if let Some(batch) = &self.last_batch {
            lines.push(Line::raw(batch.clone()));
        }
        frame.render_widget(
            Paragraph::new(lines)
                .block(Block::bordered().title(" Spawn metrics "))
                .wrap(Wrap { trim: true }),
            area,
        );
    }
}

/// A window over the panels: centred, `width` columns at most, as tall as its lines.
fn overlay(frame: &mut Frame, title: &str, lines: Vec<Line>, width: u16) {
    let area = frame.area();
    let width = width.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let window = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(ratatui::widgets::Clear, window);
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(title.to_string()))
            .wrap(Wrap { trim: false }),
        window,
    );
}

fn field(name: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<10}"), label_style()),
        Span::raw(value),
    ])
}

fn label_style() -> Style {
    Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD)
}

fn key_style() -> Style {
    Style::new().fg(Color::Black).bg(Color::Gray)
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A fire time in the schedule's time zone: `11-30 03:00 CET`.
fn zoned(at: DateTime<Utc>, tz: ScheduleTz) -> String {
    const FORMAT: &str = "%m-%d %H:%M %Z";
    match tz {
        ScheduleTz::Utc => at.format(FORMAT).to_string(),
        ScheduleTz::Local => at.with_timezone(&chrono::Local).format(FORMAT).to_string(),
        ScheduleTz::Named(zone) => at.with_timezone(&zone).format(FORMAT).to_string(),
    }
}

/// A path shortened from the left to `width` characters (its end says the most).
fn left_truncate(path: &Path, width: usize) -> String {
    let text = path.display().to_string();
    let count = text.chars().count();
    if count <= width || width == 0 {
        return text;
    }
    let tail: String = text.chars().skip(count - width + 1).collect();
    format!("…{tail}")
}

fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}
