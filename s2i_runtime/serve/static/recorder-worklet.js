// Runs on the audio rendering thread: hands each block of microphone samples (channel 0) to the page.
class PcmRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true; // keep running until the page disconnects the node
  }
}
registerProcessor("pcm-recorder", PcmRecorder);
