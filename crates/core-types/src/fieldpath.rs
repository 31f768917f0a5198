//! Field paths for update requests (`labels`, `labels.k`, `annotations.k`).
