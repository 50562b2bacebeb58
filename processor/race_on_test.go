//go:build race

package processor

// raceEnabled: the race detector's shadow memory multiplies the resident
// size of every heap byte it sees.
const raceEnabled = true
