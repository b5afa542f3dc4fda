//! Metrics of the zoo, read from each step's [`StepStats`]: loss, bits/dim,
//! perplexity, accuracy and tokens per second.

use std::sync::Arc;
use std::time::Instant;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, SerializedEntry,
};
use combiner_nn::{bits_per_dim, perplexity, StepStats};

/// Which quantity a [`ZooMetric`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// Mean cross-entropy in nats.
    Loss,
    /// Loss / ln 2 (image models).
    BitsPerDim,
    /// exp(mean loss) over the predictions seen (running: over the epoch).
    Perplexity,
    /// Fraction of correct predictions.
    Accuracy,
    /// Input tokens per second of wall time between steps.
    TokensPerSecond,
}

/// The step statistics are their own metric input.
#[derive(Clone, Copy, Debug)]
pub struct StatsInput(pub StepStats);

impl Adaptor<StatsInput> for StepStats {
    fn adapt(&self) -> StatsInput {
        StatsInput(*self)
    }
}

/// One numeric metric over [`StepStats`].
#[derive(Clone)]
pub struct ZooMetric {
    name: MetricName,
    quantity: Quantity,
    state: NumericMetricState,
    // running sums for ratio metrics: (loss * count or correct, count)
    num: f64,
    den: f64,
    last: Option<Instant>,
    current: f64,
}

impl ZooMetric {
    /// A metric reporting `quantity`.
    pub fn new(quantity: Quantity) -> Self {
        let name = match quantity {
            Quantity::Loss => "Loss",
            Quantity::BitsPerDim => "Bits per dim",
            Quantity::Perplexity => "Perplexity",
            Quantity::Accuracy => "Accuracy",
            Quantity::TokensPerSecond => "Tokens per second",
        };
        ZooMetric {
            name: Arc::new(name.to_string()),
            quantity,
            state: NumericMetricState::new(),
            num: 0.0,
            den: 0.0,
            last: None,
            current: f64::NAN,
        }
    }
}

impl Metric for ZooMetric {
    type Input = StatsInput;

    fn update(&mut self, item: &StatsInput, _metadata: &MetricMetadata) -> SerializedEntry {
        let s = item.0;
        let fmt = FormatOptions::new(self.name.clone()).precision(4);
        match self.quantity {
            Quantity::Loss => self.state.update(s.loss, s.count.max(1), fmt),
            Quantity::BitsPerDim => self.state.update(bits_per_dim(s.loss), s.count.max(1), fmt),
            Quantity::Perplexity => {
                self.num += s.loss * s.count as f64;
                self.den += s.count as f64;
                self.current = perplexity(s.loss);
                let running = perplexity(self.num / self.den.max(1.0));
                SerializedEntry::new(
                    format!("epoch {running:.4} - batch {:.4}", self.current),
                    NumericEntry::Value(self.current).serialize(),
                )
            }
            Quantity::Accuracy => {
                let correct = s.correct.unwrap_or(0) as f64;
                self.num += correct;
                self.den += s.count as f64;
                self.current = correct / (s.count.max(1) as f64);
                let running = self.num / self.den.max(1.0);
                SerializedEntry::new(
                    format!("epoch {running:.4} - batch {:.4}", self.current),
                    NumericEntry::Value(self.current).serialize(),
                )
            }
            Quantity::TokensPerSecond => {
                let now = Instant::now();
                let rate = match self.last {
                    Some(t) => s.tokens as f64 / now.duration_since(t).as_secs_f64().max(1e-9),
                    None => f64::NAN,
                };
                self.last = Some(now);
                if rate.is_finite() {
                    self.state
                        .update(rate, 1, FormatOptions::new(self.name.clone()).precision(0))
                } else {
                    SerializedEntry::new("warming up".into(), NumericEntry::Value(0.0).serialize())
                }
            }
        }
    }

    fn clear(&mut self) {
        self.state.reset();
        self.num = 0.0;
        self.den = 0.0;
        self.last = None;
        self.current = f64::NAN;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: matches!(
                self.quantity,
                Quantity::Accuracy | Quantity::TokensPerSecond
            ),
        }
        .into()
    }
}

impl Numeric for ZooMetric {
    fn value(&self) -> NumericEntry {
        match self.quantity {
            Quantity::Perplexity | Quantity::Accuracy => NumericEntry::Value(self.current),
            _ => self.state.current_value(),
        }
    }

    fn running_value(&self) -> NumericEntry {
        match self.quantity {
            Quantity::Perplexity => NumericEntry::Value(perplexity(self.num / self.den.max(1.0))),
            Quantity::Accuracy => NumericEntry::Value(self.num / self.den.max(1.0)),
            _ => self.state.running_value(),
        }
    }
}
