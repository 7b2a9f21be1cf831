"""The decks' diagnostic tools: learning-rate rules, memory footprint, loss landscapes, spectra."""
