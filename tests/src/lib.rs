//! Helpers that make each end-to-end test read like a recipe.
