// AudioWorklet processors of the bidi-core web client (docs/web-protocol.md).
//
// bidi-capture:  microphone -> PCM16 blocks at the model's input rate (box-filter decimation
//                from the AudioContext's rate), posted to the page every `blockMs`.
// bidi-playback: PCM16 chunks at the model's output rate -> the speakers, through a jitter
//                buffer (prebuffered at the start of a response and after an underrun),
//                resampled to the AudioContext's rate by linear interpolation. A "clear"
//                message empties it before the next render quantum; what each response
//                actually played is counted in the model's samples and posted to the page.

class BidiCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, blockMs } = options.processorOptions;
    this.ratio = sampleRate / targetRate; // input samples per output sample
    this.blockLen = Math.round((targetRate * blockMs) / 1000);
    this.block = new Int16Array(this.blockLen);
    this.fill = 0;
    this.acc = 0; // sum of the input samples of the output sample being built
    this.n = 0; // how many input samples are in acc
    this.pos = 0; // input samples consumed towards the current output sample
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let s = 0;
      for (let c = 0; c < channels; c++) s += input[c][i];
      this.acc += s / channels;
      this.n += 1;
      this.pos += 1;
      if (this.pos >= this.ratio) {
        this.pos -= this.ratio;
        const v = Math.max(-1, Math.min(1, this.acc / this.n));
        this.block[this.fill++] = v < 0 ? v * 0x8000 : v * 0x7fff;
        this.acc = 0;
        this.n = 0;
        if (this.fill === this.blockLen) {
          this.port.postMessage(this.block.buffer, [this.block.buffer]);
          this.block = new Int16Array(this.blockLen);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

class BidiPlayback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { sourceRate, prebufferMs, reportEvery } = options.processorOptions;
    this.sourceRate = sourceRate;
    this.step = sourceRate / sampleRate; // source samples per output sample
    this.prebuffer = Math.round((sourceRate * prebufferMs) / 1000);
    this.reportEvery = reportEvery; // render quanta between playback reports
    this.queue = []; // [{rid, data: Float32Array, offset}]
    this.buffered = 0; // source samples queued
    this.frac = 0; // fractional source position inside the head chunk
    this.playing = false; // false while prebuffering
    this.played = new Map(); // rid -> source samples played
    this.complete = new Set(); // rids whose last audio has arrived
    this.dirty = new Set(); // rids whose played count moved since the last report
    this.quanta = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      const pcm = new Int16Array(msg.pcm);
      const data = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 0x8000;
      this.queue.push({ rid: msg.rid, data, offset: 0 });
      this.buffered += data.length;
      if (!this.played.has(msg.rid)) this.played.set(msg.rid, 0);
    } else if (msg.type === "complete") {
      this.complete.add(msg.rid);
      this.dirty.add(msg.rid);
    } else if (msg.type === "clear") {
      // Barge-in: drop everything queued, the chunk being played included, before the next quantum.
      const discarded = this.buffered;
      const rids = new Set(this.queue.map((c) => c.rid));
      this.queue = [];
      this.buffered = 0;
      this.frac = 0;
      this.playing = false;
      const played = {};
      for (const [rid, n] of this.played) played[rid] = (n * 1000) / this.sourceRate;
      for (const rid of rids) this.complete.add(rid);
      this.port.postMessage({
        type: "cleared",
        discardedMs: (discarded * 1000) / this.sourceRate,
        played,
        at: currentTime,
      });
      for (const rid of rids) this.dirty.add(rid);
      this.report();
    }
  }

  report() {
    const reports = [];
    for (const rid of this.dirty) {
      const finished = this.complete.has(rid) && !this.queue.some((c) => c.rid === rid);
      reports.push({ rid, playedMs: ((this.played.get(rid) || 0) * 1000) / this.sourceRate, finished });
      if (finished) {
        this.complete.delete(rid);
      }
    }
    this.dirty.clear();
    if (reports.length) this.port.postMessage({ type: "played", reports, buffered: this.buffered });
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const frames = out[0].length;
    const left = out[0];
    if (!this.playing) {
      const head = this.queue.length ? this.queue[0].rid : null;
      if (this.buffered >= this.prebuffer || (head !== null && this.complete.has(head))) this.playing = true;
    }
    let underrun = false;
    for (let i = 0; i < frames; i++) {
      let v = 0;
      if (this.playing && this.queue.length) {
        const chunk = this.queue[0];
        const idx = chunk.offset;
        const a = chunk.data[idx];
        const b = idx + 1 < chunk.data.length ? chunk.data[idx + 1] : this.queue.length > 1 ? this.queue[1].data[0] : a;
        v = a + (b - a) * this.frac;
        this.frac += this.step;
        while (this.frac >= 1 && this.queue.length) {
          this.frac -= 1;
          const head = this.queue[0];
          head.offset += 1;
          this.buffered -= 1;
          this.played.set(head.rid, (this.played.get(head.rid) || 0) + 1);
          this.dirty.add(head.rid);
          if (head.offset >= head.data.length) this.queue.shift();
        }
      } else if (this.playing) {
        underrun = true;
      }
      left[i] = v;
    }
    for (let c = 1; c < out.length; c++) out[c].set(left);
    if (underrun && !this.queue.length) {
      this.playing = false; // prebuffer again before the next audio
      this.frac = 0;
    }
    this.quanta += 1;
    if (this.quanta % this.reportEvery === 0) this.report();
    return true;
  }
}

registerProcessor("bidi-capture", BidiCapture);
registerProcessor("bidi-playback", BidiPlayback);
