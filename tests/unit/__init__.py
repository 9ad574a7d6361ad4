"""Unit tests: pure logic and single components, no real external parts."""
