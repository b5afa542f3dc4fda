//! Backend choice at run time. Generic code takes `B: Backend`; the concrete
//! backend types appear only here, each behind its cargo feature, so a build
//! carries exactly the backends it was asked for.

use anyhow::Result;
use burn::prelude::Backend;
use clap::ValueEnum;

/// A burn backend selectable with `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// CPU (ndarray); the default and the only backend of a default build.
    Ndarray,
    /// wgpu (Vulkan/Metal/DX12); `--device N` is the N-th discrete GPU.
    Wgpu,
    /// CUDA through CubeCL; `--device N` is the CUDA ordinal.
    Cuda,
    /// LibTorch (tch); `--device N` is the CUDA ordinal.
    Tch,
}

impl BackendKind {
    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Tch => "tch",
        }
    }
}

/// The backends compiled into this binary.
pub fn compiled() -> Vec<BackendKind> {
    BackendKind::value_variants()
        .iter()
        .copied()
        .filter(|k| match k {
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Tch => cfg!(feature = "tch"),
        })
        .collect()
}

/// Help text of `--backend`, naming the backends this build has.
pub fn backend_help() -> String {
    let names: Vec<&str> = compiled().into_iter().map(BackendKind::feature).collect();
    format!(
        "Backend that runs tensor work (this build has: {}; others need their cargo feature)",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// Work that runs on whichever backend the command line picks.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` and `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output>;

    /// Device indices for a data-parallel job (empty: the `--device` one).
    fn devices(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Runs the job on several devices of backend `B` (data parallel).
    fn run_many<B: Backend>(self, devices: Vec<B::Device>) -> Result<Self::Output>
    where
        Self: Sized,
    {
        let first = devices.into_iter().next().expect("at least one device");
        self.run::<B>(first)
    }
}

/// Element type of every float tensor of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// 32-bit float (every backend).
    F32,
    /// bfloat16 (tch, cuda).
    Bf16,
    /// IEEE half (tch, cuda).
    F16,
}

impl Dtype {
    /// The name on the command line and in result files.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

impl From<combiner_tasks::Precision> for Dtype {
    fn from(p: combiner_tasks::Precision) -> Self {
        match p {
            combiner_tasks::Precision::F32 => Dtype::F32,
            combiner_tasks::Precision::Bf16 => Dtype::Bf16,
            combiner_tasks::Precision::F16 => Dtype::F16,
        }
    }
}

/// An error where `kind` cannot run in `dtype`.
pub fn check_dtype(kind: BackendKind, dtype: Dtype) -> Result<()> {
    let ok = dtype == Dtype::F32 || matches!(kind, BackendKind::Tch | BackendKind::Cuda);
    anyhow::ensure!(
        ok,
        "backend `{}` runs f32 only here; {} needs --backend tch or --backend cuda",
        kind.feature(),
        dtype.name()
    );
    Ok(())
}

/// [`run_on`] with every float tensor in `dtype`.
pub fn run_on_dtype<J: BackendJob>(
    kind: BackendKind,
    index: usize,
    dtype: Dtype,
    job: J,
) -> Result<J::Output> {
    check_dtype(kind, dtype)?;
    match (kind, dtype) {
        (_, Dtype::F32) => run_on(kind, index, job),
        #[cfg(feature = "tch")]
        (BackendKind::Tch, Dtype::Bf16) => {
            job.run::<burn::backend::libtorch::LibTorch<burn::tensor::bf16>>(tch_device(index)?)
        }
        #[cfg(feature = "tch")]
        (BackendKind::Tch, Dtype::F16) => {
            job.run::<burn::backend::libtorch::LibTorch<burn::tensor::f16>>(tch_device(index)?)
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Dtype::Bf16) => job
            .run::<burn::backend::cuda::Cuda<burn::tensor::bf16>>(
                burn::backend::cuda::CudaDevice::new(index),
            ),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Dtype::F16) => job.run::<burn::backend::cuda::Cuda<burn::tensor::f16>>(
            burn::backend::cuda::CudaDevice::new(index),
        ),
        _ => Err(not_compiled(kind)),
    }
}

/// Runs `job` on the backend `kind`, device `index`, or explains which cargo
/// feature is missing.
pub fn run_on<J: BackendJob>(kind: BackendKind, index: usize, job: J) -> Result<J::Output> {
    match kind {
        BackendKind::Ndarray => ndarray(index, job),
        BackendKind::Wgpu => wgpu(index, job),
        BackendKind::Cuda => cuda(index, job),
        BackendKind::Tch => tch(index, job),
    }
}

// Unused only in a build that has every backend.
#[cfg_attr(
    all(
        feature = "ndarray",
        feature = "wgpu",
        feature = "cuda",
        feature = "tch"
    ),
    allow(dead_code)
)]
fn not_compiled(kind: BackendKind) -> anyhow::Error {
    let f = kind.feature();
    anyhow::anyhow!(
        "backend `{f}` is not compiled in: rebuild with \
         `cargo build --release -p combiner-cli --features {f}`"
    )
}

#[cfg(feature = "ndarray")]
fn ndarray<J: BackendJob>(index: usize, job: J) -> Result<J::Output> {
    use burn::backend::ndarray::{NdArray, NdArrayDevice};
    anyhow::ensure!(
        index == 0,
        "backend `ndarray` has one device (the CPU), but --device {index} was given"
    );
    let many = job.devices();
    if many.len() > 1 {
        // CPU replicas on the one CPU device: data parallelism without speed-up,
        // useful to check that a multi-device run matches a single-device one
        anyhow::ensure!(
            many.iter().all(|&i| i == 0),
            "backend `ndarray` has one device (the CPU): --devices may only repeat 0, got {many:?}"
        );
        return job.run_many::<NdArray<f32>>(vec![NdArrayDevice::Cpu; many.len()]);
    }
    job.run::<NdArray<f32>>(NdArrayDevice::Cpu)
}

#[cfg(not(feature = "ndarray"))]
fn ndarray<J: BackendJob>(_index: usize, _job: J) -> Result<J::Output> {
    Err(not_compiled(BackendKind::Ndarray))
}

#[cfg(feature = "wgpu")]
fn wgpu<J: BackendJob>(index: usize, job: J) -> Result<J::Output> {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};
    let many = job.devices();
    if many.len() > 1 {
        return job.run_many::<Wgpu<f32>>(many.into_iter().map(WgpuDevice::DiscreteGpu).collect());
    }
    job.run::<Wgpu<f32>>(WgpuDevice::DiscreteGpu(index))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu<J: BackendJob>(_index: usize, _job: J) -> Result<J::Output> {
    Err(not_compiled(BackendKind::Wgpu))
}

#[cfg(feature = "cuda")]
fn cuda<J: BackendJob>(index: usize, job: J) -> Result<J::Output> {
    use burn::backend::cuda::{Cuda, CudaDevice};
    let many = job.devices();
    if many.len() > 1 {
        return job.run_many::<Cuda<f32>>(many.into_iter().map(CudaDevice::new).collect());
    }
    job.run::<Cuda<f32>>(CudaDevice::new(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda<J: BackendJob>(_index: usize, _job: J) -> Result<J::Output> {
    Err(not_compiled(BackendKind::Cuda))
}

/// CUDA device `index` of libtorch, or an error saying how many it sees
/// (libtorch itself would abort on the first tensor).
#[cfg(feature = "tch")]
fn tch_device(index: usize) -> Result<burn::backend::libtorch::LibTorchDevice> {
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    anyhow::ensure!(
        index < count,
        "--backend tch runs on CUDA device {index}, but libtorch sees {count} CUDA device(s) \
         (no NVIDIA GPU or driver on this machine?)"
    );
    Ok(burn::backend::libtorch::LibTorchDevice::Cuda(index))
}

#[cfg(feature = "tch")]
fn tch<J: BackendJob>(index: usize, job: J) -> Result<J::Output> {
    use burn::backend::libtorch::LibTorch;
    let many = job.devices();
    if many.len() > 1 {
        let devices = many
            .into_iter()
            .map(tch_device)
            .collect::<Result<Vec<_>>>()?;
        return job.run_many::<LibTorch<f32>>(devices);
    }
    job.run::<LibTorch<f32>>(tch_device(index)?)
}

#[cfg(not(feature = "tch"))]
fn tch<J: BackendJob>(_index: usize, _job: J) -> Result<J::Output> {
    Err(not_compiled(BackendKind::Tch))
}
