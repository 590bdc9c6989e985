//! AdamW with decoupled weight decay, global-norm gradient clipping, and a linear warm-up
//! followed by a cosine decay of the learning rate: the optimizer of nanoGPT and of
//! transformers' `Trainer` defaults, written over plain tensors so that its state is saved and
//! restored bit for bit.

use tch::Tensor;

use crate::error::Result;

/// AdamW's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWSettings {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε added to the square root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not to norm gains).
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// One trainable tensor and its optimizer state.
#[derive(Debug)]
pub(crate) struct Parameter {
    /// Hugging Face name.
    pub(crate) name: String,
    /// The float32 leaf the model computes with (`requires_grad`).
    pub(crate) value: Tensor,
    /// First moment.
    pub(crate) m: Tensor,
    /// Second moment.
    pub(crate) v: Tensor,
    /// Whether weight decay applies (matrices, not gains).
    pub(crate) decays: bool,
}

impl Parameter {
    /// A trainable copy of `initial` (never a view of it: the source may be a read-only
    /// mapping), converted to float32, with zeroed moments.
    pub(crate) fn new(name: String, initial: &Tensor) -> Result<Self> {
        let value = initial
            .f_to_kind(tch::Kind::Float)?
            .f_detach_copy()?
            .f_contiguous()?
            .set_requires_grad(true);
        let m = value.f_zeros_like()?;
        let v = value.f_zeros_like()?;
        let decays = value.dim() >= 2;
        Ok(Self {
            name,
            value,
            m,
            v,
            decays,
        })
    }
}

/// The learning rate at `step` (0-based): linear warm-up over `warmup` steps to `peak`, then a
/// cosine decay to `floor` at `total`, and `floor` after.
pub fn learning_rate(step: u64, warmup: u64, total: u64, peak: f64, floor: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    if step >= total {
        return floor;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    floor + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (peak - floor)
}

/// Scales every gradient so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (as `torch.nn.utils.clip_grad_norm_` does).
pub(crate) fn clip_gradients(parameters: &[Parameter], max_norm: f64) -> Result<f64> {
    tch::no_grad(|| {
        let mut squares = Vec::with_capacity(parameters.len());
        for parameter in parameters {
            let grad = parameter.value.grad();
            if grad.defined() {
                squares.push(grad.f_square()?.f_sum(tch::Kind::Float)?);
            }
        }
        if squares.is_empty() {
            return Ok(0.0);
        }
        let norm = Tensor::f_stack(&squares, 0)?
            .f_sum(tch::Kind::Float)?
            .f_sqrt()?
            .f_double_value(&[])?;
        if norm.is_finite() && norm > max_norm && max_norm > 0.0 {
            let scale = max_norm / (norm + 1e-6);
            for parameter in parameters {
                let mut grad = parameter.value.grad();
                if grad.defined() {
                    let _ = grad.f_mul_scalar_(scale)?;
                }
            }
        }
        Ok(norm)
    })
}

/// One AdamW update of every parameter with a gradient, at 1-based step `t`, then the
/// gradients are zeroed.
pub(crate) fn adamw_step(
    parameters: &mut [Parameter],
    settings: &AdamWSettings,
    learning_rate: f64,
    t: u64,
) -> Result<()> {
    let t = t.max(1) as i32;
    let correction1 = 1.0 - settings.beta1.powi(t);
    let correction2 = 1.0 - settings.beta2.powi(t);
    tch::no_grad(|| -> Result<()> {
        for parameter in parameters.iter_mut() {
            let mut grad = parameter.value.grad();
            if !grad.defined() {
                continue;
            }
            // p ← p − lr·λ·p (decoupled decay, before the moment update, as torch.optim.AdamW)
            if parameter.decays && settings.weight_decay > 0.0 {
                let _ = parameter
                    .value
                    .f_mul_scalar_(1.0 - learning_rate * settings.weight_decay)?;
            }
            // m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²
            let _ = parameter.m.f_mul_scalar_(settings.beta1)?;
            let _ = parameter
                .m
                .f_add_(&grad.f_mul_scalar(1.0 - settings.beta1)?)?;
            let _ = parameter.v.f_mul_scalar_(settings.beta2)?;
            let _ = parameter
                .v
                .f_add_(&grad.f_square()?.f_mul_scalar(1.0 - settings.beta2)?)?;
            // p ← p − lr · (m / c₁) / (√(v / c₂) + ε)
            let denominator = parameter
                .v
                .f_div_scalar(correction2)?
                .f_sqrt()?
                .f_add_scalar(settings.eps)?;
            let update = parameter
                .m
                .f_div(&denominator)?
                .f_mul_scalar(learning_rate / correction1)?;
            let _ = parameter.value.f_sub_(&update)?;
            let _ = grad.f_zero_()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_the_floor() {
        let lr = |step| learning_rate(step, 10, 110, 1e-3, 1e-4);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(60) - 5.5e-4).abs() < 1e-9);
        assert!((lr(110) - 1e-4).abs() < 1e-12);
        assert!((1..110).all(|step| lr(step) <= lr(step - 1) || step < 10));
    }

    #[test]
    fn adamw_matches_torch_optim_adamw_on_one_step() {
        // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1), one
        // step on p = [1, -2], g = [0.5, 0.25]: each coordinate moves by lr·sign(g) after
        // bias correction, then the decay: p·(1 − 0.01) − 0.1.
        let initial = Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]);
        let mut parameters = vec![Parameter::new("p".to_owned(), &initial).expect("copy")];
        let loss = (&parameters[0].value * Tensor::from_slice(&[0.5f32, 0.25]).view([1, 2]))
            .sum(tch::Kind::Float);
        loss.backward();
        adamw_step(&mut parameters, &AdamWSettings::default(), 0.1, 1).expect("step");
        let got =
            Vec::<f32>::try_from(parameters[0].value.detach().flatten(0, -1)).expect("floats");
        let expected = [1.0 * 0.99 - 0.1, -2.0 * 0.99 - 0.1];
        for (got, expected) in got.iter().zip(expected) {
            assert!(
                (f64::from(*got) - expected).abs() < 1e-6,
                "{got} vs {expected}"
            );
        }
        // The source tensor is untouched: the parameter is a copy.
        assert_eq!(
            Vec::<f32>::try_from(initial.flatten(0, -1)).expect("floats"),
            [1.0, -2.0]
        );
        assert!(parameters[0].value.grad().abs().max().double_value(&[]) == 0.0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut parameters = vec![
            Parameter::new(
                "a".to_owned(),
                &Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu)),
            )
            .expect("copy"),
        ];
        let loss =
            (&parameters[0].value * Tensor::from_slice(&[3.0f32, 4.0, 0.0])).sum(tch::Kind::Float);
        loss.backward();
        let norm = clip_gradients(&parameters, 1.0).expect("clip");
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped = parameters[0].value.grad().norm().double_value(&[]);
        assert!((clipped - 1.0).abs() < 1e-5, "{clipped}");
        parameters.clear();
    }
}
