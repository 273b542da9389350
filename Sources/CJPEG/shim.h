#include <turbojpeg.h>
#include <stdlib.h>
#include <string.h>

// libjpeg-turbo's TurboJPEG API (Debian: libturbojpeg0-dev), wrapped so that Swift sees one call.

/// Decodes a JPEG held in memory to 8-bit pixels, rows top to bottom: greyscale files as 1 channel,
/// every other colour space as RGB (3 channels), with libjpeg's defaults (accurate integer DCT,
/// fancy upsampling), which are Pillow's. On success returns 0 and sets *pixels (malloc'ed, free
/// with free()), *width, *height and *channels. On failure returns -1 and copies TurboJPEG's
/// message into message (at most message_size bytes, NUL-terminated).
static inline int cnn_jpeg_decode(const unsigned char *bytes, unsigned long count, unsigned char **pixels,
                                  int *width, int *height, int *channels,
                                  char *message, size_t message_size) {
    tjhandle handle = tjInitDecompress();
    if (handle == NULL) {
        strncpy(message, tjGetErrorStr2(NULL), message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    int subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(handle, bytes, count, width, height, &subsampling, &colorspace) != 0) {
        strncpy(message, tjGetErrorStr2(handle), message_size - 1);
        message[message_size - 1] = 0;
        tjDestroy(handle);
        return -1;
    }
    int gray = colorspace == TJCS_GRAY;
    *channels = gray ? 1 : 3;
    size_t size = (size_t)(*width) * (size_t)(*height) * (size_t)(*channels);
    unsigned char *buffer = malloc(size > 0 ? size : 1);
    if (buffer == NULL) {
        strncpy(message, "out of memory", message_size - 1);
        message[message_size - 1] = 0;
        tjDestroy(handle);
        return -1;
    }
    // TJFLAG_STOPONWARNING: a truncated or damaged file is an error, not a grey-padded image.
    if (tjDecompress2(handle, bytes, count, buffer, *width, 0, *height, gray ? TJPF_GRAY : TJPF_RGB,
                      TJFLAG_STOPONWARNING) != 0) {
        strncpy(message, tjGetErrorStr2(handle), message_size - 1);
        message[message_size - 1] = 0;
        free(buffer);
        tjDestroy(handle);
        return -1;
    }
    tjDestroy(handle);
    *pixels = buffer;
    return 0;
}

/// Encodes 8-bit grey (channels 1) or RGB (channels 3) pixels as a baseline JPEG in memory with
/// the given quality (1-100; colour with 4:2:0 chroma subsampling, as Pillow's default). On
/// success returns 0 and sets *bytes (free with tjFree()) and *count.
static inline int cnn_jpeg_encode(const unsigned char *pixels, int width, int height, int channels, int quality,
                                  unsigned char **bytes, unsigned long *count,
                                  char *message, size_t message_size) {
    tjhandle handle = tjInitCompress();
    if (handle == NULL) {
        strncpy(message, tjGetErrorStr2(NULL), message_size - 1);
        message[message_size - 1] = 0;
        return -1;
    }
    *bytes = NULL;
    *count = 0;
    if (tjCompress2(handle, pixels, width, 0, height, channels == 1 ? TJPF_GRAY : TJPF_RGB, bytes, count,
                    channels == 1 ? TJSAMP_GRAY : TJSAMP_420, quality, 0) != 0) {
        strncpy(message, tjGetErrorStr2(handle), message_size - 1);
        message[message_size - 1] = 0;
        tjDestroy(handle);
        return -1;
    }
    tjDestroy(handle);
    return 0;
}

static inline void cnn_jpeg_free(unsigned char *bytes) { tjFree(bytes); }
