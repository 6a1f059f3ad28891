//! `with_*` setters for the fields of a config's nested configs, so users write
//! `GaLoreConfig::new().with_rank(128).with_beta_2(0.99)` as in the reference code, while the
//! fields live once in [`SubspaceConfig`](crate::SubspaceConfig) and
//! [`AdamParams`](crate::adam::AdamParams).

/// `nested_setters!(Config, field { /// doc  with_x: x: Type, ... })` adds to `Config` one
/// setter per listed field of `Config::field`.
macro_rules! nested_setters {
    ($config:ty, $nested:ident { $($(#[$doc:meta])* $setter:ident: $field:ident: $ty:ty,)* }) => {
        impl $config {
            $(
                $(#[$doc])*
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$nested.$field = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use nested_setters;

/// Adam's setters (`with_beta_1`, `with_beta_2`, `with_epsilon`, `with_weight_decay`,
/// `with_moments`) on a
/// config with an `adam: AdamParams` field.
macro_rules! adam_setters {
    ($config:ty) => {
        $crate::setters::nested_setters!($config, adam {
            /// Sets the decay of Adam's first moment.
            with_beta_1: beta_1: f32,
            /// Sets the decay of Adam's second moment.
            with_beta_2: beta_2: f32,
            /// Sets Adam's `epsilon`.
            with_epsilon: epsilon: f32,
            /// Sets the decoupled weight decay.
            with_weight_decay: weight_decay: f32,
            /// Sets how the moments are stored (`f32`, 8 or 4 bits).
            with_moments: moments: $crate::MomentPrecision,
            /// Sets the size below which moments stay `f32`.
            with_min_quantized_len: min_quantized_len: usize,
        });
    };
}
pub(crate) use adam_setters;

/// The projection setters (`with_rank`, `with_update_proj_gap`, `with_proj_type`, ...) and
/// Adam's on a subspace optimizer's config (fields `subspace: SubspaceConfig` and
/// `adam: AdamParams`), and its `init()`: the `ModuleOptimizer` of its `build()`.
macro_rules! subspace_config {
    ($config:ty) => {
        $crate::setters::adam_setters!($config);
        $crate::setters::nested_setters!($config, subspace {
            /// Sets the subspace rank `r` (clamped per matrix to `min(m, n)`).
            with_rank: rank: usize,
            /// Sets the refresh gap `T` in steps.
            with_update_proj_gap: update_proj_gap: usize,
            /// Sets which side of each matrix is projected.
            with_proj_type: proj_type: $crate::projection::ProjType,
            /// Sets how refreshes compute the basis (SVD, randomized SVD, DCT, random, ...).
            with_projection: projection: $crate::projection::ProjectionMethod,
            /// Sets what happens to the moments at a refresh.
            with_moment_policy: moment_policy: $crate::projection::MomentPolicy,
            /// Sets the randomized SVD's oversampling `p`.
            with_oversample: oversample: usize,
            /// Sets the randomized SVD's power iterations `q`.
            with_power_iters: power_iters: usize,
            /// Sets the density: each matrix's rank becomes `round(density * len)`.
            with_density: density: Option<f32>,
            /// Sets the column norm that ranks DCT columns (L1 or L2).
            with_dct_norm: dct_norm: $crate::projection::DctNorm,
            /// Sets how DCT scores are computed (fast DCT on the host or a device matmul).
            with_dct_scoring: dct_scoring: $crate::projection::DctScoring,
            /// Turns on Q-GaLore's adaptive refresh gap.
            with_adaptive_gap: adaptive_gap: bool,
            /// Sets the seed of random sketches and bases.
            with_seed: seed: u64,
        });
        impl $config {
            /// A `ModuleOptimizer` with this optimizer on every parameter: every matrix
            /// projected (every tensor, in block mode), every other tensor on the same Adam
            /// unprojected. To keep embeddings, norms and the output head on AdamW, route
            /// [`build`](Self::build)'s optimizer with a [`Router`](crate::Router) instead.
            pub fn init(&self) -> $crate::Result<burn::optim::ModuleOptimizer> {
                self.build().map(burn::optim::ModuleOptimizer::from)
            }
        }
    };
}
pub(crate) use subspace_config;
