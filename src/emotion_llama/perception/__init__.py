"""From raw video to model inputs: faces, action units, peak frame, aligned crops, transcript."""
