// Audio worklets of the talk page, at the AudioContext's rate (24 kHz, the Realtime PCM rate).

// The microphone, in 40 ms frames of float samples posted to the page.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frame = new Float32Array(960);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let at = 0;
      while (at < channel.length) {
        const n = Math.min(channel.length - at, this.frame.length - this.filled);
        this.frame.set(channel.subarray(at, at + n), this.filled);
        this.filled += n;
        at += n;
        if (this.filled === this.frame.length) {
          this.port.postMessage(this.frame);
          this.frame = new Float32Array(960);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

// The answer's audio, played without gaps from a queue of chunks; "clear" drops what is
// queued (barge-in). Reports how many samples have been played, so the page knows how much
// of an answer was heard.
class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.played = 0;
    this.lastReport = 0;
    this.port.onmessage = (event) => {
      if (event.data === "clear") {
        this.queue = [];
        this.offset = 0;
        this.port.postMessage({ played: this.played, cleared: true });
      } else {
        this.queue.push(event.data);
      }
    };
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    let at = 0;
    while (at < out.length && this.queue.length) {
      const chunk = this.queue[0];
      const n = Math.min(out.length - at, chunk.length - this.offset);
      out.set(chunk.subarray(this.offset, this.offset + n), at);
      at += n;
      this.offset += n;
      this.played += n;
      if (this.offset === chunk.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, at);
    if (this.played !== this.lastReport && (currentFrame % 1200 < 128 || !this.queue.length)) {
      this.lastReport = this.played;
      this.port.postMessage({ played: this.played, idle: !this.queue.length });
    }
    return true;
  }
}

registerProcessor("castwork-capture", Capture);
registerProcessor("castwork-player", Player);
