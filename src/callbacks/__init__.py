"""Lightning callbacks the project adds to every Trainer or offers in configs/callbacks/."""
