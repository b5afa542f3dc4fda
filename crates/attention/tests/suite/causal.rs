//! Causality: in LM mode, the output at position i does not change when any
//! input after i changes.

use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::Mode;

use crate::common::*;

#[test]
fn lm_outputs_do_not_depend_on_later_inputs() {
    let dev = Default::default();
    B::seed(&dev, 30);
    let (len, cut) = (50, 23);
    for cfg in all_configs() {
        if !cfg.supports(Mode::Lm) {
            continue;
        }
        let a = cfg.init::<B>(16, 2, Mode::Lm, 0.0, &dev);
        let x = Tensor::<B, 3>::random([2, len, 16], Distribution::Normal(0.0, 1.0), &dev);
        let noise =
            Tensor::<B, 3>::random([2, len - cut, 16], Distribution::Normal(0.0, 3.0), &dev);
        let y = x.clone().slice_assign([0..2, cut..len, 0..16], noise);
        let ox = a.forward(x).slice([0..2, 0..cut, 0..16]);
        let oy = a.forward(y.clone()).slice([0..2, 0..cut, 0..16]);
        let err = max_abs_diff(ox, oy);
        assert!(
            err < 1e-5,
            "{}: output before {cut} moved by {err:e}",
            cfg.name()
        );
        // and the later outputs do react (the test would pass vacuously otherwise)
        let later = a.forward(y).slice([0..2, cut..len, 0..16]);
        assert!(later.abs().max().into_scalar().elem::<f64>() > 0.0);
    }
}
