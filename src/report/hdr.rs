//! HdrHistogram's file formats for the run's latency: the percentile distribution (`.hgrm`,
//! the text `outputPercentileDistribution` writes and HdrHistogram's plotter reads, values in
//! µs) and the interval log (`.hlog`, base64 compressed histograms, one interval per sample
//! window: what `HistogramLogProcessor` and the `hdrhistogram` package on PyPI read).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use hypervisor_sim::traffic::{LATENCY_SIGFIG, LatencyLog};

/// HdrHistogram's percentile-distribution text, values (ns recorded) in µs.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let scale = 1000.0;
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { String::new() };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            v.value_iterated_to() as f64 / scale,
            q,
            total,
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-buckets per bucket for `sigfig` significant digits: the power of two at
/// or above 2 × 10^sigfig (2,048 for 3 digits), what its own percentile output prints.
fn sub_bucket_count(sigfig: u8) -> u32 {
    (2 * 10u32.pow(u32::from(sigfig))).next_power_of_two()
}

/// HdrHistogram's interval log (`.hlog`: what its log tools and the `hdrhistogram` package on
/// PyPI read): one interval per interval of `log` (a sample window, unless the run has more
/// than `MAX_LOG_INTERVALS` windows) from a start time of 0 to the end of the run's `run_s`
/// seconds, empty ones included, values in ns (the max column in µs), each histogram compressed
/// (V2 + deflate) and base64-encoded.
pub fn hlog(log: &LatencyLog, path: &str, run_s: f64) -> Result<Vec<u8>, String> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let width = Duration::from_nanos(log.interval_ns());
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "vnic-lab: one-way latency of the {path} path by receive time, values in ns, one \
             interval per {} ms",
            width.as_millis()
        ))
        .with_start_time(std::time::UNIX_EPOCH)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| format!("hlog: {e}"))?;
    let run = Duration::from_secs_f64(run_s.max(0.0));
    let intervals = log.len().max(run.as_nanos().div_ceil(width.as_nanos().max(1)) as usize);
    let empty = Histogram::<u64>::new(LATENCY_SIGFIG).map_err(|e| format!("hlog: {e}"))?;
    for k in 0..intervals {
        let start = width * k as u32;
        let h = log.interval(k).unwrap_or(&empty);
        writer.write_histogram(h, start, width, None).map_err(|e| format!("hlog: {e:?}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sized for 1 s in 100 ms windows, values in windows 0, 3 and 9: the file holds ten
    /// intervals at 100 ms steps (the empty ones too), each with its own values, and together
    /// they are the run's histogram.
    #[test]
    fn the_hlog_holds_one_interval_per_window_and_they_sum_to_the_run() {
        use hdrhistogram::serialization::Deserializer;
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        const MS: u64 = 1_000_000;
        let mut log = LatencyLog::new(100 * MS, 1_000 * MS);
        for v in 1..=1_000u64 {
            log.record(50 * MS, v * 1_000);
        }
        for v in 1..=10u64 {
            log.record(350 * MS, v * 1_000_000);
        }
        log.record(999 * MS, 42_000);
        let bytes = hlog(&log, "sriov", 1.0).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("#[StartTime: 0.000"), "{text}");
        let intervals: Vec<_> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(i)) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 10);
        let mut sum = hypervisor_sim::traffic::latency_histogram();
        for (k, i) in intervals.iter().enumerate() {
            assert_eq!(i.start_timestamp(), Duration::from_millis(100 * k as u64));
            assert_eq!(i.duration(), Duration::from_millis(100));
            let raw = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                i.encoded_histogram(),
            )
            .unwrap();
            let h: Histogram<u64> =
                Deserializer::new().deserialize(&mut std::io::Cursor::new(raw)).unwrap();
            let want = match k {
                0 => 1_000,
                3 => 10,
                9 => 1,
                _ => 0,
            };
            assert_eq!(h.len(), want, "interval {k}");
            sum.add(&h).unwrap();
        }
        let total = log.total();
        assert_eq!(sum.len(), 1_011);
        assert_eq!(sum.len(), total.len());
        assert_eq!(sum.value_at_quantile(0.5), total.value_at_quantile(0.5));
        assert_eq!(sum.value_at_quantile(0.999), total.value_at_quantile(0.999));
        assert_eq!(sum.max(), total.max());
        // The 10 ms values are the top 1 %: the 99.5th percentile is one of them.
        assert!(total.value_at_quantile(0.995) >= 1_000_000);
    }

    /// More windows than the log keeps: each interval is the fewest whole windows that fit.
    #[test]
    fn a_long_fine_run_logs_whole_multiples_of_the_window() {
        use hypervisor_sim::traffic::MAX_LOG_INTERVALS;
        const MS: u64 = 1_000_000;
        // 600 s in 10 ms windows is 60,000 windows: 200 per interval keeps 300 intervals.
        let log = LatencyLog::new(10 * MS, 600_000 * MS);
        assert_eq!(log.interval_ns(), 10 * MS * 60_000u64.div_ceil(MAX_LOG_INTERVALS));
        assert_eq!(log.interval_ns(), 2_000 * MS);
        // 3 s in 100 ms windows: one window per interval.
        assert_eq!(LatencyLog::new(100 * MS, 3_000 * MS).interval_ns(), 100 * MS);
    }

    #[test]
    fn the_hgrm_footer_is_hdrhistograms() {
        // 3 significant digits: unit resolution up to 2 × 10³ needs 2¹¹ = 2,048 sub-buckets.
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(2), 256);
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let text = hgrm(&h);
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
        assert!(text.contains("Total count    =            4]"), "{text}");
        let max = text.lines().find(|l| l.starts_with("#[Max")).unwrap();
        assert!(max.contains("1000.") || max.contains("1000.959"), "{max}");
    }
}
