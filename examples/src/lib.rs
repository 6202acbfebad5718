//! Runnable examples live under src/bin.
