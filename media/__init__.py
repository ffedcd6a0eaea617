"""Ad-video rendering: templates, narration, render plans and the ffmpeg runner."""
