//! A module field that stays on the device it was created on.
//!
//! SwitchLoRA's candidate pools hold `2 * min(d_in, d_out)` spare vectors per layer: more than
//! the adapters themselves, and touched only when a vector is switched. They live in host memory
//! while the model trains on an accelerator. Wrapping them in [`Resident`] keeps them there when
//! the model is moved or forked to a device, while they are still visited, so module records save
//! and load them like any other parameter.

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::Device;

/// A non-trainable module part pinned to its device: saved and loaded with the module record,
/// never moved by [`Module::to_device`] or [`Module::fork`], never part of autodiff.
#[derive(Clone, Debug)]
pub struct Resident<P>(pub P);

impl<P: Module> Module for Resident<P> {
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.0.visit(visitor)
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self(self.0.map(mapper))
    }

    fn to_device(self, _: &Device) -> Self {
        self
    }

    fn fork(self, _: &Device) -> Self {
        self
    }

    fn collect_devices(&self, devices: Devices) -> Devices {
        devices
    }

    fn materialize(self) -> Self {
        self
    }

    fn valid(&self) -> Self {
        self.clone()
    }

    fn train(self) -> Self {
        self
    }
}

impl<P: ModuleDisplay> ModuleDisplayDefault for Resident<P> {
    fn content(&self, content: Content) -> Option<Content> {
        self.0.content(content)
    }
}

impl<P: ModuleDisplay> ModuleDisplay for Resident<P> {}
