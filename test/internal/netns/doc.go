// Package netns is the tests' use of Linux network namespaces: creating
// linked pairs, and listening and dialing inside one from the test
// process. Needs root.
package netns
