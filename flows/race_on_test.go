//go:build race

package flows

// raceEnabled: the race detector changes allocation counts.
const raceEnabled = true
