//! Whole-system test harness for Shoal (filled in by the cluster issue).
