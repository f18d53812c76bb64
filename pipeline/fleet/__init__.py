"""The model stage on a fleet of Ray actors: attempts of inputs that kill their actor, the live
pool watched, the Ray session."""
