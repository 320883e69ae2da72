//! One test per crash the fuzzer found and that was fixed: the input is in
//! `fuzz/regressions/{target}/` (replayed with the corpus too), and the test
//! says what the fixed code answers for it.
