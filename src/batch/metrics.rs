//! The Prometheus textfile (`--metrics-file`) of a run's [`Summary`], for node_exporter's
//! textfile collector.
use super::report::{Status, Summary};

impl Summary {
    /// Prometheus text exposition format, for node_exporter's textfile collector.
    ///
    /// `last_success`: when a run last succeeded, written as it is (not advanced) when this
    /// run did not succeed, so that an alert on its age keeps working across failed runs.
    pub fn prometheus(
        &self,
        finished_unix: f64,
        success: bool,
        last_success: Option<f64>,
    ) -> String {
        let mut s = String::new();
        s.push_str("# HELP ddcolor_files_total Inputs of the last run, by outcome.\n");
        s.push_str("# TYPE ddcolor_files_total gauge\n");
        for st in Status::ALL {
            s.push_str(&format!(
                "ddcolor_files_total{{status=\"{st}\"}} {}\n",
                self.by_status(st)
            ));
        }
        let gauges: [(&str, &str, f64); 10] = [
            (
                "ddcolor_inputs_found",
                "Paths the last run found to look at, in all shards (0: an empty or unmounted input).",
                self.found as f64,
            ),
            (
                "ddcolor_unique_images",
                "Distinct images (by SHA-256) in the last run.",
                self.unique as f64,
            ),
            (
                "ddcolor_inferences",
                "Images the model ran on in the last run.",
                self.inferred as f64,
            ),
            (
                "ddcolor_cache_hits",
                "Cache hits in the last run.",
                self.cache_hits as f64,
            ),
            (
                "ddcolor_cache_misses",
                "Cache misses in the last run.",
                self.cache_misses as f64,
            ),
            (
                "ddcolor_cache_errors",
                "Cache operations that failed in the last run (all kinds; by kind: ddcolor_cache_operation_errors).",
                self.cache_errors as f64,
            ),
            (
                "ddcolor_files_hashed",
                "Files read and hashed in the last run (the others were known to the index).",
                self.hashed as f64,
            ),
            (
                "ddcolor_bytes_read",
                "Bytes of input files read in the last run.",
                self.bytes_read as f64,
            ),
            (
                "ddcolor_model_loaded",
                "1 if the last run loaded the model (0: it had nothing to infer).",
                if self.model_loaded { 1.0 } else { 0.0 },
            ),
            (
                "ddcolor_duration_seconds",
                "Wall time of the last run.",
                self.elapsed.as_secs_f64(),
            ),
        ];
        for (name, help, v) in gauges {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
        s.push_str(
            "# HELP ddcolor_cache_operation_errors Cache operations that failed in the last run, by kind.\n",
        );
        s.push_str("# TYPE ddcolor_cache_operation_errors gauge\n");
        for (op, n) in self.cache_errors_by.by_op() {
            s.push_str(&format!(
                "ddcolor_cache_operation_errors{{op=\"{}\"}} {n}\n",
                op.as_str()
            ));
        }
        s.push_str("# HELP ddcolor_last_run_timestamp_seconds When the last run finished.\n");
        s.push_str("# TYPE ddcolor_last_run_timestamp_seconds gauge\n");
        s.push_str(&format!(
            "ddcolor_last_run_timestamp_seconds {finished_unix:.3}\n"
        ));
        if let Some(t) = if success {
            Some(finished_unix)
        } else {
            last_success
        } {
            s.push_str(
                "# HELP ddcolor_last_success_timestamp_seconds When a run last finished with no failed file and something to look at.\n",
            );
            s.push_str("# TYPE ddcolor_last_success_timestamp_seconds gauge\n");
            s.push_str(&format!("ddcolor_last_success_timestamp_seconds {t:.3}\n"));
        }
        s
    }
}
