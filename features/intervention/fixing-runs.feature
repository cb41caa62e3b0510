@intervention
Feature: What an operator's fix does to the order and the follow-up
  An operator's action changes what the engine does next, and nothing else:
  a retried call keeps its idempotency key, so the order service never takes
  the order twice; a run resumed from an earlier step runs again as a new
  execution, under new keys; a skipped step stands in with the output the
  operator gives; a corrected input is what later steps see; a paused or
  canceled run does nothing, even when its timer comes due.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                                                     | then                |
      | map      | transform | {id: order.id, total: order.sum}                                         | push                |
      | push     | http_call | POST the mapped order to /orders, up to 2 attempts, backing off 1 minute | check               |
      | check    | branch    | when push answered 200                                                   | done, else rejected |
      | done     | terminate | succeeded                                                                |                     |
      | rejected | terminate | failed: the order service refused it                                     |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  Scenario: A call that gave up is retried once the order service is back, under the same idempotency key
    Given a run of "order-sync" that is between attempts of "push"
    When "dana@acme.example" retries "push" because "the order service is back"
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service saw 2 attempts but took the order once

  Scenario: A call that used up its attempts is retried by hand once the order service is back, and the order is taken once
    Given the order service answers every order with 503
    And "acme" has a finished run of "order-sync"
    When the order service answers normally again
    And "dana@acme.example" retries "push" because "the order service is back"
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service saw 3 attempts but took the order once

  Scenario: A refused order is corrected and run again from the mapping, as a new execution under a new key
    Given a run of "order-sync" that is failed at "push"
    When "dana@acme.example" patches the run's input because "the customer confirmed the right total", with:
      """json
      { "order": { "sum": 40.0 } }
      """
    And "dana@acme.example" resumes the run from "map" because "send the corrected order"
    Then the run succeeds
    And "push" was sent again under a new idempotency key
    And the order service received an order worth 40.0

  Scenario: A refused call is skipped with the answer the order service gave on the phone
    Given a run of "order-sync" that is failed at "push"
    When "dana@acme.example" skips "push" because "the order was placed by phone", with:
      """json
      { "status": 200, "body": { "orderId": "ord_phone_0042" } }
      """
    Then the run succeeds
    And the run went through "done"
    And the run replays exactly from its log

  Scenario: A skipped call stands in with the answer the operator gives, and the branch after it goes by that answer
    Given a run of "order-sync" that is failed at "push"
    When "dana@acme.example" skips "push" because "the order was queued by phone, not confirmed", with:
      """json
      { "status": 202, "body": { "queued": true } }
      """
    Then the run fails because "the order service refused it"
    And the run went through "push"
    And the run did not go through "done"
    And replaying the run gives exactly the run view users saw

  Scenario: A follow-up whose input was corrected while it waited sends the corrected order
    Given a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" patches the run's input because "the customer added a line", with:
      """json
      { "order": { "sum": 99.9 } }
      """
    And the clock moves forward 2 hours
    Then the order service received an order worth 99.9
    And the run replays exactly from its log

  Scenario: A canceled follow-up never sends its reminder, even once its timer is due
    Given a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "the customer withdrew the order"
    And the clock moves forward 2 hours
    Then the run is canceled
    And the order service was never called

  Scenario: A paused follow-up waits past its timer
    Given a run of "order-follow-up" that is paused in "wait"
    When the run's timer comes due
    Then the run is paused
    And the order service was never called

  Scenario: A follow-up unpaused after its timer came due sends its reminder at once
    Given a run of "order-follow-up" that is paused in "wait"
    And the run's timer comes due
    When "dana@acme.example" unpauses the run because "the review is done"
    Then the run succeeds
    And the order service received the order exactly once

  Scenario: A call canceled between two attempts is not tried again once its backoff is over
    Given a run of "order-sync" that is between attempts of "push"
    When "dana@acme.example" cancels the run because "the customer withdrew the order"
    And the clock moves forward 1 hour
    Then the run is canceled
    And "push" was attempted 1 time
    And the run replays exactly from its log

  Scenario: A call paused between two attempts makes its next attempt only when unpaused, under the same key
    Given a run of "order-sync" that is between attempts of "push"
    When "dana@acme.example" pauses the run because "checking the stock first"
    And the clock moves forward 1 hour
    And "dana@acme.example" unpauses the run because "the stock is there"
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service saw 2 attempts but took the order once

  Scenario: A corrected input does not change a call retried by hand: the retry sends the order as it was mapped
    Given a run of "order-sync" that is failed at "push"
    When "dana@acme.example" patches the run's input because "the customer lowered the total", with:
      """json
      { "order": { "sum": 40.0 } }
      """
    And "dana@acme.example" retries "push" because "send it again"
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service received an order worth 42.5
