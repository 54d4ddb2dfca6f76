//! How the client subcommands print what the server answered: the JSON itself when their
//! output goes to a program (a pipe, a file) or `--json` asks for it, and short readable lines
//! and tables on a terminal.

use std::io::IsTerminal;

use serde_json::Value;

/// Where the output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The answer as JSON, for programs.
    Json,
    /// Lines and tables, for people.
    Human,
}

impl Output {
    /// JSON unless stdout is a terminal (and `--json` was not given).
    pub fn detect(json: bool) -> Self {
        if json || !std::io::stdout().is_terminal() {
            Output::Json
        } else {
            Output::Human
        }
    }

    /// Prints `value` as JSON, or with `human` on a terminal.
    pub fn print(self, value: &Value, human: fn(&Value) -> String) {
        match self {
            Output::Json => {
                println!("{}", serde_json::to_string_pretty(value).unwrap_or_default())
            }
            Output::Human => print!("{}", human(value)),
        }
    }
}

/// One job, in a few lines.
pub fn job(job: &Value) -> String {
    let text = |field: &str| job[field].as_str().unwrap_or("-").to_owned();
    let mut out = format!("job {}  {}  {}\n", text("id"), text("kind"), text("status"));
    out.push_str(&format!(
        "  queue {} · priority {} · attempt {} of {}\n",
        text("queue"),
        job["priority"],
        job["attempts"],
        job["max_attempts"]
    ));
    let mut times = vec![format!("created {}", text("created_at"))];
    for (field, name) in
        [("run_at", "runs at"), ("started_at", "started"), ("finished_at", "finished")]
    {
        if let Some(at) = job[field].as_str() {
            times.push(format!("{name} {at}"));
        }
    }
    out.push_str(&format!("  {}\n", times.join(" · ")));
    if job["cancel_requested"] == Value::Bool(true) && job["status"] == "running" {
        out.push_str("  cancel requested: its handler is stopping\n");
    }
    if let Some(progress) = job.get("progress").filter(|p| !p.is_null()) {
        out.push_str(&format!("  progress {}\n", cut(&progress.to_string(), 200)));
    }
    if let Some(result) = job.get("result").filter(|r| !r.is_null()) {
        out.push_str(&format!("  result {}\n", cut(&result.to_string(), 200)));
    }
    if let Some(error) = job["error"].as_str() {
        out.push_str(&format!("  error {}\n", cut(error, 200)));
    }
    for entry in job["history"].as_array().into_iter().flatten() {
        let error = entry["error"].as_str().unwrap_or("");
        out.push_str(&format!("  attempt {} failed: {}\n", entry["attempt"], cut(error, 120)));
    }
    out
}

/// A page of jobs, as a table.
pub fn jobs(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let text = |field: &str| job[field].as_str().unwrap_or("-").to_owned();
            vec![
                text("id"),
                text("kind"),
                text("queue"),
                text("status"),
                format!("{}/{}", job["attempts"], job["max_attempts"]),
                text("created_at"),
            ]
        })
        .collect();
    let mut out = table(&["ID", "KIND", "QUEUE", "STATUS", "ATTEMPTS", "CREATED"], &rows);
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

/// The server's figures: queues, workers, cache, backends.
pub fn stats(stats: &Value) -> String {
    let states = [
        "waiting",
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "throttled",
    ];
    let rows: Vec<Vec<String>> = stats["queues"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(queue, counts)| {
            let mut row = vec![queue.clone()];
            row.extend(states.iter().map(|s| counts[*s].as_u64().unwrap_or(0).to_string()));
            row
        })
        .collect();
    let names: Vec<String> = states.iter().map(|s| s.to_uppercase()).collect();
    let header: Vec<&str> =
        std::iter::once("QUEUE").chain(names.iter().map(String::as_str)).collect();
    let mut out = if rows.is_empty() { "no jobs yet\n".to_owned() } else { table(&header, &rows) };
    let workers = &stats["workers"];
    out.push_str(&format!(
        "workers: {} of {} busy{}\n",
        workers["busy"],
        workers["total"],
        if workers["draining"] == Value::Bool(true) { " (draining)" } else { "" }
    ));
    let cache = &stats["cache"];
    if let Some(ratio) = cache["hit_ratio"].as_f64() {
        out.push_str(&format!(
            "cache: {}, {} entries, hit ratio {:.2}\n",
            cache["backend"].as_str().unwrap_or("-"),
            cache["entries"],
            ratio
        ));
    }
    let backends = &stats["backends"];
    out.push_str(&format!(
        "backends: queue {}, cache {}, redis {}\n",
        backends["queue"].as_str().unwrap_or("-"),
        backends["cache"].as_str().unwrap_or("-"),
        backends["redis"].as_str().unwrap_or("-")
    ));
    out
}

/// The schedules, as a table.
pub fn schedules(list: &Value) -> String {
    let rows: Vec<Vec<String>> =
        list["schedules"].as_array().into_iter().flatten().map(schedule_row).collect();
    if rows.is_empty() {
        return "no schedules\n".to_owned();
    }
    table(&["NAME", "CRON", "TIMEZONE", "KIND", "NEXT RUN", "LAST RUN"], &rows)
}

/// One schedule, as a one-row table.
pub fn schedule(schedule: &Value) -> String {
    table(&["NAME", "CRON", "TIMEZONE", "KIND", "NEXT RUN", "LAST RUN"], &[schedule_row(schedule)])
}

fn schedule_row(schedule: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    vec![
        text(&schedule["name"]),
        text(&schedule["cron"]),
        text(&schedule["timezone"]),
        text(&schedule["job"]["kind"]),
        text(&schedule["next_run_at"]),
        text(&schedule["last_run_at"]),
    ]
}

/// Columns aligned to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `text` cut to `most` characters, saying so.
fn cut(text: &str, most: usize) -> String {
    if text.chars().count() <= most {
        return text.to_owned();
    }
    let kept: String = text.chars().take(most).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_their_columns() {
        let rows =
            vec![vec!["a".to_owned(), "long value".to_owned()], vec!["bbb".into(), "x".into()]];
        assert_eq!(table(&["K", "V"], &rows), "K    V\na    long value\nbbb  x\n");
    }

    #[test]
    fn a_job_reads_in_a_few_lines() {
        let text = job(&json!({
            "id": "j1", "kind": "fail", "status": "failed", "queue": "default", "priority": 0,
            "attempts": 2, "max_attempts": 2, "created_at": "t0", "finished_at": "t1",
            "error": "boom", "history": [{"attempt": 1, "error": "boom"}, {"attempt": 2, "error": "boom"}]
        }));
        assert!(text.starts_with("job j1  fail  failed\n"), "{text}");
        assert!(text.contains("attempt 2 of 2") && text.contains("error boom"), "{text}");
        assert_eq!(text.matches("failed: boom").count(), 2, "{text}");
    }
}
