// SPDX-License-Identifier: Apache-2.0
#include "providers/bedrock/event_stream.hpp"
