@crash
Feature: Exactly once takes an order service that honours the key
  When a worker dies after the order service acted but before the answer was
  recorded, the next worker sends the same request again: the same
  idempotency key, the same bytes. A service that honours the key answers with
  the order it already took, so the order is placed once. A service that
  ignores the key places it again: that window, from the service taking the
  order to the engine recording the answer, is where exactly once becomes at
  least once.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |

  Scenario: A service that honours the key takes the order once across a crash
    Given the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service saw 2 attempts but took the order once

  Scenario: A service that ignores the key takes the order twice across a crash
    Given the order service ignores idempotency keys
    And the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And the order service took the order 2 times

  Scenario: Without a crash, even a service that ignores the key takes the order once
    Given the order service ignores idempotency keys
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the order service took the order 1 time
